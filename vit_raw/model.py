"""The Vision Transformer forward pass, written with tf.get_variable and plain ops (graph mode, no Keras).

Variable layout under `scope` (float32 masters; see checkpoint.py for the mapping to the official names):
  embedding/kernel [p,p,3,D], embedding/bias [D], cls [1,1,D], pos_embedding [1,T,D],
  encoderblock_{i}/{ln_attn,ln_mlp}/{scale,bias} [D],
  encoderblock_{i}/attention/qkv/kernel [D,3D] (columns: query | key | value, each head-major), qkv/bias [3D],
  encoderblock_{i}/attention/out/kernel [D,D], out/bias [D],
  encoderblock_{i}/mlp/dense_0/{kernel [D,M], bias [M]}, mlp/dense_1/{kernel [M,D], bias [D]},
  encoder_norm/{scale,bias}, pre_logits/{kernel,bias} (only with representation_size), head/{kernel,bias}.

Dtype policy: the variables are float32 and are cast to `compute_dtype` where they are used, so gradients and the
optimizer stay float32. Layer-norm statistics, the attention softmax and the head (logits) are computed in float32
whatever the compute dtype, because these are the places where float16/bfloat16 lose accuracy or overflow.
"""
import math

import numpy as np
import tensorflow.compat.v1 as tf

from vit_raw import kernels as kernels_lib
from vit_raw.configs import image_hw

LAYER_NORM_EPSILON = kernels_lib.LAYER_NORM_EPSILON
gelu_tanh = kernels_lib.gelu_tanh
gelu_exact = kernels_lib.gelu_exact


def num_tokens(config, image_size):
  """Tokens per image (patches + class token) for an int or (height, width) image size."""
  h, w = image_hw(image_size)
  return (h // config.patch_size) * (w // config.patch_size) + 1


def _xavier_uniform(fan_in, fan_out):
  """Glorot uniform with explicit fans: the fused QKV kernel must be initialised as three [D,D] kernels, not one [D,3D]."""
  limit = math.sqrt(6.0 / (fan_in + fan_out))
  return tf.random_uniform_initializer(-limit, limit)


def _lecun_normal(fan_in):
  return tf.truncated_normal_initializer(stddev=math.sqrt(1.0 / fan_in) / 0.87962566103423978)


def _variable(name, shape, initializer):
  return tf.get_variable(name, shape, dtype=tf.float32, initializer=initializer, trainable=True)


def _dense(x, kernel_shape, kernel_init, bias_init, dtype, bias_fn=tf.nn.bias_add, matmul=tf.matmul):
  """bias_fn(matmul(x, kernel), bias) on a 2-D operand; MatMul followed by BiasAdd is what grappler/oneDNN fuse into
  one kernel. Each weight is read (and cast to `dtype`) once per step: every dense layer has its own variables."""
  kernel = _variable("kernel", kernel_shape, kernel_init)
  bias = _variable("bias", kernel_shape[-1:], bias_init)
  y = matmul(x, tf.cast(kernel, dtype))
  return bias_fn(y, tf.cast(bias, dtype))


def layer_norm(x, out_dtype, kernels=kernels_lib.PLAIN):
  """Layer norm over the last axis (its scale and bias variables created here) with float32 statistics."""
  dim = x.shape[-1].value if hasattr(x.shape[-1], "value") else x.shape[-1]
  scale = _variable("scale", [dim], tf.ones_initializer())
  bias = _variable("bias", [dim], tf.zeros_initializer())
  return kernels.layer_norm(x, scale, bias, out_dtype)


def _dropout(x, rate, is_training, kernels=kernels_lib.PLAIN):
  """Dropout only when training and rate > 0; is_training may be a Python bool or a boolean tensor."""
  if not rate:
    return x
  if isinstance(is_training, bool):
    return kernels.dropout(x, rate) if is_training else x
  return tf.cond(is_training, lambda: kernels.dropout(x, rate), lambda: tf.identity(x))


def _attention(x2d, batch, tokens, config, dtype, attention_dropout_rate, is_training, kernels, with_probs):
  """Multi-head self-attention on a [batch*tokens, D] operand; returns ([batch*tokens, D], probs [B,heads,T,T] if
  `with_probs` else None).

  One fused QKV matmul on 2-D operands, one transpose to [3,B,heads,T,head_dim], batched matmuls for the scores
  and the context (kernels.attention, unless the probabilities are asked for or dropped out), one transpose back,
  one 2-D output matmul.
  """
  d, heads = config.hidden_size, config.num_heads
  head_dim = d // heads
  with tf.variable_scope("qkv"):
    qkv = _dense(x2d, [d, 3 * d], _xavier_uniform(d, d), tf.zeros_initializer(), dtype)
  qkv = tf.reshape(qkv, [batch, tokens, 3, heads, head_dim])
  qkv = tf.transpose(qkv, [2, 0, 3, 1, 4])
  q, k, v = tf.unstack(qkv, 3, axis=0)
  scale = 1.0 / math.sqrt(head_dim)
  if not with_probs and not (attention_dropout_rate and is_training is not False):
    return _attention_output(kernels.attention(q, k, v, scale, dtype), batch, tokens, d, dtype), None
  probs = kernels.softmax(tf.matmul(q * scale, k, transpose_b=True), dtype)  # q scaled: T*head_dim products, not T*T
  context = tf.matmul(_dropout(probs, attention_dropout_rate, is_training, kernels), v)
  return _attention_output(context, batch, tokens, d, dtype), probs


def _attention_output(context, batch, tokens, d, dtype):
  """The heads' [B, heads, T, head_dim] context back to [B*T, D] and through the output projection."""
  context = tf.reshape(tf.transpose(context, [0, 2, 1, 3]), [batch * tokens, d])
  with tf.variable_scope("out"):
    return _dense(context, [d, d], _xavier_uniform(d, d), tf.zeros_initializer(), dtype)


def _mlp(x2d, config, dtype, gelu, dropout_rate, is_training, kernels):
  """dense_0, GELU, (dropout), dense_1. Without dropout the GELU and dense_1's matmul are one kernels.gelu_matmul,
  so a lean backward can recompute the GELU's output instead of keeping it."""
  d, m = config.hidden_size, config.mlp_dim
  approximate = gelu == "tanh"
  dropped = dropout_rate and is_training is not False
  with tf.variable_scope("dense_0"):
    h = _dense(x2d, [d, m], _xavier_uniform(d, m), tf.random_normal_initializer(stddev=1e-6), dtype,
               bias_fn=(lambda y, b: kernels.bias_gelu(y, b, approximate)) if dropped else tf.nn.bias_add)
  h = _dropout(h, dropout_rate, is_training, kernels)
  with tf.variable_scope("dense_1"):
    return _dense(h, [m, d], _xavier_uniform(m, d), tf.random_normal_initializer(stddev=1e-6), dtype,
                  matmul=tf.matmul if dropped else lambda y, k: kernels.gelu_matmul(y, k, approximate))


def _embed_patches(images, config, dtype):
  """Patch embedding as reshape + one [B*N, p*p*3] x [p*p*3, D] matmul (equal to the stride-p VALID conv).

  Returns ([B, N, D], grid height, grid width).
  """
  p, d = config.patch_size, config.hidden_size
  h, w, c = [int(s) for s in images.shape[1:]]
  if h % p or w % p:
    raise ValueError("image size %dx%d is not divisible by the patch size %d of %s" % (h, w, p, config.name))
  gh, gw = h // p, w // p
  with tf.variable_scope("embedding"):
    kernel = _variable("kernel", [p, p, c, d], _lecun_normal(p * p * c))
    bias = _variable("bias", [d], tf.zeros_initializer())
  x = tf.reshape(images, [-1, gh, p, gw, p, c])
  x = tf.transpose(x, [0, 1, 3, 2, 4, 5])  # (patch row, patch col, pixel row, pixel col, channel)
  x = tf.reshape(x, [-1, p * p * c])
  x = tf.matmul(x, tf.cast(tf.reshape(kernel, [p * p * c, d]), dtype))
  x = tf.nn.bias_add(x, tf.cast(bias, dtype))
  return tf.reshape(x, [-1, gh * gw, d]), gh, gw


def vit(images, config, num_classes, is_training, dropout_rate=0.0, attention_dropout_rate=0.0,
        representation_size=None, compute_dtype=tf.float32, gelu="tanh", return_attention=False, scope="vit",
        kernels=None):
  """Builds ViT on `images` [B,H,W,3] (scaled to [-1,1], static H and W divisible by the patch).

  Returns float32 logits [B, num_classes]; with return_attention=True, (logits, list of per-layer attention
  probabilities [B, heads, T, T] in float32). Calling twice with the same scope shares the variables.
  kernels: the vit_raw.kernels.KernelSet of the layer norms, GELU, softmax and dropout (default: the plain ops).
  """
  dtype = tf.as_dtype(compute_dtype)
  if dtype not in (tf.float32, tf.float16, tf.bfloat16):
    raise ValueError("compute_dtype must be float32, float16 or bfloat16, got %s" % dtype.name)
  if gelu not in kernels_lib.GELUS:
    raise ValueError("gelu must be one of %s, got %r" % (sorted(kernels_lib.GELUS), gelu))
  kernels = kernels or kernels_lib.PLAIN
  if config.hidden_size % config.num_heads:
    raise ValueError("hidden size %d is not divisible by %d heads" % (config.hidden_size, config.num_heads))
  if images.shape.ndims != 4 or images.shape[1:].is_fully_defined() is False:
    raise ValueError("images must be [B,H,W,C] with static H, W, C; got %s" % images.shape)
  d = config.hidden_size
  attentions = []
  with tf.variable_scope(scope, reuse=tf.AUTO_REUSE):
    x = tf.cast(images, dtype)
    tokens, gh, gw = _embed_patches(x, config, dtype)
    batch = tf.shape(tokens)[0]
    seq = gh * gw + 1
    cls = _variable("cls", [1, 1, d], tf.zeros_initializer())
    pos = _variable("pos_embedding", [1, seq, d], tf.random_normal_initializer(stddev=0.02))
    cls_tokens = tf.tile(tf.cast(cls, dtype), tf.stack([batch, 1, 1]))
    x = tf.concat([cls_tokens, tokens], axis=1) + tf.cast(pos, dtype)
    x = _dropout(x, dropout_rate, is_training, kernels)
    # The residual stream stays 2-D [B*T, D] so every dense layer is one plain MatMul without reshapes.
    x = tf.reshape(x, [batch * seq, d])
    for i in range(config.num_layers):
      with tf.variable_scope("encoderblock_%d" % i):
        with tf.variable_scope("ln_attn"):
          y = layer_norm(x, dtype, kernels)
        with tf.variable_scope("attention"):
          y, probs = _attention(y, batch, seq, config, dtype, attention_dropout_rate, is_training, kernels,
                                return_attention)
        if return_attention:
          attentions.append(tf.cast(probs, tf.float32))
        x = x + _dropout(y, dropout_rate, is_training, kernels)
        with tf.variable_scope("ln_mlp"):
          y = layer_norm(x, dtype, kernels)
        with tf.variable_scope("mlp"):
          y = _mlp(y, config, dtype, gelu, dropout_rate, is_training, kernels)
        x = x + _dropout(y, dropout_rate, is_training, kernels)
    # Only the class token reaches the head, and layer norm is per token, so normalising that row alone is exact.
    pooled = tf.reshape(x, [batch, seq, d])[:, 0]
    with tf.variable_scope("encoder_norm"):
      pooled = layer_norm(pooled, tf.float32, kernels)
    if representation_size:
      with tf.variable_scope("pre_logits"):
        pooled = tf.tanh(_dense(pooled, [d, representation_size], _lecun_normal(d), tf.zeros_initializer(), tf.float32))
    with tf.variable_scope("head"):
      width = int(pooled.shape[-1])
      logits = _dense(pooled, [width, num_classes], tf.zeros_initializer(), tf.zeros_initializer(), tf.float32)
  if return_attention:
    return logits, attentions
  return logits


def count_parameters(config, num_classes, image_size, representation_size=None):
  """Analytic parameter count of vit(...) (equal to the sum of its variable sizes) without building a graph."""
  return sum(int(np.prod(s)) for s in variable_shapes(config, num_classes, image_size, representation_size).values())


def variable_shapes(config, num_classes, image_size, representation_size=None):
  """Ordered {name relative to the scope: shape} of every variable vit(...) creates."""
  p, d, m = config.patch_size, config.hidden_size, config.mlp_dim
  shapes = [("embedding/kernel", (p, p, 3, d)), ("embedding/bias", (d,)), ("cls", (1, 1, d)),
            ("pos_embedding", (1, num_tokens(config, image_size), d))]
  for i in range(config.num_layers):
    b = "encoderblock_%d/" % i
    shapes += [(b + "ln_attn/scale", (d,)), (b + "ln_attn/bias", (d,)), (b + "attention/qkv/kernel", (d, 3 * d)),
               (b + "attention/qkv/bias", (3 * d,)), (b + "attention/out/kernel", (d, d)),
               (b + "attention/out/bias", (d,)), (b + "ln_mlp/scale", (d,)), (b + "ln_mlp/bias", (d,)),
               (b + "mlp/dense_0/kernel", (d, m)), (b + "mlp/dense_0/bias", (m,)), (b + "mlp/dense_1/kernel", (m, d)),
               (b + "mlp/dense_1/bias", (d,))]
  shapes += [("encoder_norm/scale", (d,)), ("encoder_norm/bias", (d,))]
  width = d
  if representation_size:
    shapes += [("pre_logits/kernel", (d, representation_size)), ("pre_logits/bias", (representation_size,))]
    width = representation_size
  shapes += [("head/kernel", (width, num_classes)), ("head/bias", (num_classes,))]
  return dict(shapes)


def forward_flops(config, image_size, num_classes=1000, representation_size=None):
  """Matmul FLOPs (2 per multiply-add) of one image's forward pass; training is about 3x this."""
  h, w = image_hw(image_size)
  p, d, m = config.patch_size, config.hidden_size, config.mlp_dim
  n = (h // p) * (w // p)
  t = n + 1
  per_layer = 2 * t * d * 3 * d + 2 * 2 * t * t * d + 2 * t * d * d + 2 * 2 * t * d * m
  head = 2 * d * (representation_size or 0) + 2 * (representation_size or d) * num_classes
  return 2 * n * p * p * 3 * d + config.num_layers * per_layer + head
