"""The Vision Transformer forward pass, written with tf.get_variable and plain ops (graph mode, no Keras).

Variable layout under `scope` (float32 masters; parameters.py lists them without TensorFlow, checkpoint_mapping.py
maps them to the official names):
  embedding/kernel [p,p,3,D], embedding/bias [D], cls [1,1,D], pos_embedding [1,T,D],
  (with stem "conv" instead of the patch embedding: stem_{i}/kernel [3,3,C_in,C_i], stem_{i}/norm/{scale,bias} [C_i]
  for i < log2(p), then embedding/kernel [1,1,C_last,D], embedding/bias [D]),
  encoderblock_{i}/{ln_attn,ln_mlp}/{scale,bias} [D],
  encoderblock_{i}/attention/qkv/kernel [D,3D] (columns: query | key | value, each head-major), qkv/bias [3D],
  encoderblock_{i}/attention/out/kernel [D,D], out/bias [D],
  encoderblock_{i}/mlp/dense_0/{kernel [D,M], bias [M]}, mlp/dense_1/{kernel [M,D], bias [D]},
  encoder_norm/{scale,bias}, pre_logits/{kernel,bias} (only with representation_size), head/{kernel,bias}.

Dtype policy: the variables are float32 and are cast to `compute_dtype` where they are used, so gradients and the
optimizer stay float32. Layer-norm statistics, the attention softmax and the head (logits) are computed in float32
whatever the compute dtype, because these are the places where float16/bfloat16 lose accuracy or overflow.

Stochastic depth (drop_path_rate) follows DeiT/timm: block i of L drops its attention and MLP branches, per example,
with probability drop_path_rate * i / (L - 1) while training. The masks are stateless draws from `rng_seed`, so a
run that feeds the same seed at the same step (the trainer derives it from the global step) draws the same masks
after a resume.
"""
import math

import numpy as np
import tensorflow.compat.v1 as tf

from vit_raw import configs
from vit_raw import kernels as kernels_lib
from vit_raw import parameters
from vit_raw.configs import image_hw
from vit_raw.errors import ModelError

LAYER_NORM_EPSILON = kernels_lib.LAYER_NORM_EPSILON
gelu_tanh = kernels_lib.gelu_tanh
gelu_exact = kernels_lib.gelu_exact
num_tokens = parameters.num_tokens
variable_shapes = parameters.variable_shapes


def _xavier_uniform(fan_in, fan_out):
  """Glorot uniform with explicit fans.

  The fused QKV kernel must be initialised as three [D,D] kernels, not one [D,3D].
  """
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


def drop_path_rates(drop_path_rate, num_layers):
  """Per-block drop path rates, linear in depth as DeiT/timm: block i of L gets drop_path_rate * i / (L - 1), so the
  first block never drops and the last drops with drop_path_rate (a single block: 0, as torch.linspace)."""
  if num_layers < 2:
    return [0.0] * num_layers
  return [drop_path_rate * i / (num_layers - 1) for i in range(num_layers)]


def _drop_path(x2d, rate, is_training, seeds, index, batch, tokens, kernels):
  """Drop path on a residual branch [batch*tokens, D] per example with the seed seeds[index], only when training
  and rate > 0 (otherwise no op at all); is_training may be a Python bool or a boolean tensor."""
  if not rate or is_training is False:
    return x2d

  def dropped():
    d = int(x2d.shape[-1])
    return tf.reshape(kernels.drop_path(tf.reshape(x2d, [batch, tokens, d]), rate, seeds[index]), [batch * tokens, d])

  if isinstance(is_training, bool):
    return dropped()
  return tf.cond(is_training, dropped, lambda: tf.identity(x2d))


def _drop_path_seeds(rng_seed, num_layers):
  """[num_layers, 2 branches, 2] int32 seeds, one per block and branch (attention, MLP), from one stateless draw:
  offsetting rng_seed per block instead would give block i + 1 at one seed the masks of block i at the next."""
  seed = tf.convert_to_tensor(rng_seed)
  if seed.dtype not in (tf.int32, tf.int64) or not seed.shape.is_compatible_with([2]):
    raise ValueError("rng_seed must be an int32/int64 tensor of shape [2], got %s %s" % (seed.dtype.name, seed.shape))
  with tf.name_scope("drop_path_seeds"):
    return tf.random.stateless_uniform([num_layers, 2, 2], seed, minval=0, maxval=2**31 - 1, dtype=tf.int32)


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


def _patch_grid(images, config):
  """(rows, cols) of patches of `images` [B,H,W,C]; ModelError when H or W is not a multiple of the patch."""
  p = config.patch_size
  h, w = [int(s) for s in images.shape[1:3]]
  if h % p or w % p:
    raise ModelError("image size %dx%d is not divisible by the patch size %d of %s" % (h, w, p, config.name))
  return h // p, w // p


def _project_tokens(rows, kernel_shape, grid, dtype):
  """embedding/: one [B*N, K] x [K, D] matmul + bias on `rows` [B*N, K], K the product of the kernel's first three
  dimensions; returns the tokens [B, N, D]."""
  k, d = int(np.prod(kernel_shape[:3])), kernel_shape[3]
  with tf.variable_scope("embedding"):
    kernel = _variable("kernel", kernel_shape, _lecun_normal(k))
    bias = _variable("bias", [d], tf.zeros_initializer())
  x = tf.matmul(rows, tf.cast(tf.reshape(kernel, [k, d]), dtype))
  x = tf.nn.bias_add(x, tf.cast(bias, dtype))
  return tf.reshape(x, [-1, grid[0] * grid[1], d])


def _embed_patches(images, config, dtype):
  """Patch embedding as reshape + one [B*N, p*p*3] x [p*p*3, D] matmul (equal to the stride-p VALID conv).

  Returns ([B, N, D], grid height, grid width).
  """
  p, c = config.patch_size, int(images.shape[-1])
  gh, gw = _patch_grid(images, config)
  x = tf.reshape(images, [-1, gh, p, gw, p, c])
  x = tf.transpose(x, [0, 1, 3, 2, 4, 5])  # (patch row, patch col, pixel row, pixel col, channel)
  x = tf.reshape(x, [-1, p * p * c])
  return _project_tokens(x, [p, p, c, config.hidden_size], (gh, gw), dtype), gh, gw


def _conv_stem(images, config, dtype, kernels):
  """Tokens from a convolutional stem: log2(p) 3x3 stride-2 SAME convolutions (no bias), each followed by a layer
  norm over its channels and a ReLU, then a 1x1 projection to D (Xiao et al. 2021). Normalising per pixel instead of
  over the batch (their BatchNorm) keeps training and inference the same graph, with no statistics to update inside
  the N-step loop or to reduce across ranks.

  Returns ([B, N, D], grid height, grid width), as _embed_patches.
  """
  gh, gw = _patch_grid(images, config)
  x = images
  for i, width in enumerate(configs.conv_stem_widths(config)):
    cin = int(x.shape[-1])
    with tf.variable_scope("stem_%d" % i):
      kernel = _variable("kernel", [3, 3, cin, width], tf.variance_scaling_initializer(2.0, "fan_in", "normal"))
      x = tf.nn.conv2d(x, tf.cast(kernel, dtype), [1, 2, 2, 1], "SAME")
      with tf.variable_scope("norm"):
        x = tf.nn.relu(layer_norm(x, dtype, kernels))
  cin = int(x.shape[-1])
  return _project_tokens(tf.reshape(x, [-1, cin]), [1, 1, cin, config.hidden_size], (gh, gw), dtype), gh, gw


def vit(images, config, num_classes, is_training, dropout_rate=0.0, attention_dropout_rate=0.0,
        representation_size=None, compute_dtype=tf.float32, gelu="tanh", return_attention=False, scope="vit",
        kernels=None, drop_path_rate=0.0, rng_seed=None):
  """Builds ViT on `images` [B,H,W,3] (scaled to [-1,1], static H and W divisible by the patch).

  Returns float32 logits [B, num_classes]; with return_attention=True, (logits, list of per-layer attention
  probabilities [B, heads, T, T] in float32). Calling twice with the same scope shares the variables.
  kernels: the vit_raw.kernels.KernelSet of the layer norms, GELU, softmax, dropout and drop path (default: the
    plain ops).
  drop_path_rate: stochastic depth of the deepest block, in [0, 1); block i drops with drop_path_rates(...)[i]. Only
    while training; with 0 or is_training False the graph is the same as without it.
  rng_seed: int32/int64 [2] tensor the drop path masks are drawn from (statelessly; each block and branch gets its
    own seed derived from it). Required when drop path is on; feed a value that is a function of the step (e.g.
    [seed, global_step]) so that a resumed run draws exactly the masks the uninterrupted run would have.
  """
  dtype = tf.as_dtype(compute_dtype)
  if dtype not in (tf.float32, tf.float16, tf.bfloat16):
    raise ValueError("compute_dtype must be float32, float16 or bfloat16, got %s" % dtype.name)
  if gelu not in kernels_lib.GELUS:
    raise ValueError("gelu must be one of %s, got %r" % (sorted(kernels_lib.GELUS), gelu))
  kernels = kernels or kernels_lib.PLAIN
  if not 0.0 <= drop_path_rate < 1.0:
    raise ValueError("drop_path_rate must be in [0, 1), got %r" % (drop_path_rate,))
  rates = drop_path_rates(drop_path_rate, config.num_layers) if is_training is not False else []
  if any(rates) and rng_seed is None:
    raise ValueError("drop_path_rate > 0 in training needs rng_seed, an int32/int64 [2] tensor (e.g. [seed, step])")
  if config.hidden_size % config.num_heads:
    raise ModelError("hidden size %d is not divisible by %d heads" % (config.hidden_size, config.num_heads))
  if images.shape.ndims != 4 or images.shape[1:].is_fully_defined() is False:
    raise ValueError("images must be [B,H,W,C] with static H, W, C; got %s" % images.shape)
  d = config.hidden_size
  attentions = []
  with tf.variable_scope(scope, reuse=tf.AUTO_REUSE):
    x = tf.cast(images, dtype)
    if config.stem == "conv":
      tokens, gh, gw = _conv_stem(x, config, dtype, kernels)
    else:
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
    seeds = _drop_path_seeds(rng_seed, config.num_layers) if any(rates) else None
    for i in range(config.num_layers):
      rate = rates[i] if rates else 0.0
      with tf.variable_scope("encoderblock_%d" % i):
        with tf.variable_scope("ln_attn"):
          y = layer_norm(x, dtype, kernels)
        with tf.variable_scope("attention"):
          y, probs = _attention(y, batch, seq, config, dtype, attention_dropout_rate, is_training, kernels,
                                return_attention)
        if return_attention:
          attentions.append(tf.cast(probs, tf.float32))
        y = _dropout(y, dropout_rate, is_training, kernels)
        x = x + _drop_path(y, rate, is_training, seeds, (i, 0), batch, seq, kernels)
        with tf.variable_scope("ln_mlp"):
          y = layer_norm(x, dtype, kernels)
        with tf.variable_scope("mlp"):
          y = _mlp(y, config, dtype, gelu, dropout_rate, is_training, kernels)
        y = _dropout(y, dropout_rate, is_training, kernels)
        x = x + _drop_path(y, rate, is_training, seeds, (i, 1), batch, seq, kernels)
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


def forward_flops(config, image_size, num_classes=1000, representation_size=None):
  """Matmul FLOPs (2 per multiply-add) of one image's forward pass; training is about 3x this."""
  h, w = image_hw(image_size)
  p, d, m = config.patch_size, config.hidden_size, config.mlp_dim
  n = (h // p) * (w // p)
  t = n + 1
  per_layer = 2 * t * d * 3 * d + 2 * 2 * t * t * d + 2 * t * d * d + 2 * 2 * t * d * m
  head = 2 * d * (representation_size or 0) + 2 * (representation_size or d) * num_classes
  return _stem_flops(config, h, w) + config.num_layers * per_layer + head


def _stem_flops(config, h, w):
  """FLOPs of the patch embedding, or of the conv stem's convolutions (at 1/2, 1/4, ... of the input size) and its
  1x1 projection."""
  p, d = config.patch_size, config.hidden_size
  n = (h // p) * (w // p)
  if config.stem == "patch":
    return 2 * n * p * p * 3 * d
  flops, cin = 0, 3
  for i, width in enumerate(configs.conv_stem_widths(config)):
    flops += 2 * (h >> (i + 1)) * (w >> (i + 1)) * 9 * cin * width
    cin = width
  return flops + 2 * n * cin * d
