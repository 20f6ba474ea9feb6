"""The chains around the matmuls (layer norm, bias + GELU, softmax, the attention core, dropout, drop path), one set
per backend.

The model asks a `KernelSet` for each chain instead of writing the ops itself, so a backend can swap in its own
implementation without touching the model:
  plain  the reference: TensorFlow's standard ops, which grappler/oneDNN fuse where they can. Always there.
  xla    the same ops, each chain inside its own `jit_scope`, so XLA fuses the chain (and its gradient) into one
         kernel while MatMul stays with oneDNN.
  npu    Ascend's GELU (tanh form) and dropout ops; launch/npu.py builds it, because only that module imports
         npu_bridge.
With lean_backward (the default of for_backend) layer norm, GELU, the MLP's GELU + matmul and the attention core
get hand-written gradients that keep only their inputs for the backward and recompute the rest (lean_layer_norm,
lean_gelu, lean_gelu_matmul, lean_attention): for ViT-B/16 @224 batch 8 the live activations at the step's peak go
from 2.0 to 0.80 GB (docs/benchmarks.md).
Every chain opens a name scope (layer_norm, gelu, softmax) so a trace can be grouped by chain (tools.bench_model).
"""
import collections
import functools
import math

import tensorflow.compat.v1 as tf

LAYER_NORM_EPSILON = 1e-6  # flax.linen.LayerNorm default, which the official checkpoints were trained with.
BACKENDS = ("plain", "xla", "npu")
LEAN_PARTS = ("layer_norm", "attention", "mlp")  # the chains that can take a hand-written (lean) gradient


def _one_pass_statistics(x32):
  """Per-row mean and variance over the last axis from one read of x: E[x], E[x^2] - E[x]^2 (clipped at 0)."""
  mean = tf.reduce_mean(x32, axis=-1, keepdims=True)
  return mean, tf.maximum(tf.reduce_mean(tf.square(x32), axis=-1, keepdims=True) - tf.square(mean), 0.0)


def layer_norm(x, scale, bias, out_dtype, one_pass=True):
  """Layer norm over the last axis with float32 statistics; returns `out_dtype`.

  one_pass: the variance as E[x^2] - E[x]^2, both means from one read of x (the inputs of a ViT block are O(1), so
  the cancellation is harmless in float32); otherwise tf.nn.moments (mean, then the squared deviations).
  """
  with tf.name_scope("layer_norm"):
    x32 = tf.cast(x, tf.float32)
    if one_pass:
      mean, variance = _one_pass_statistics(x32)
    else:
      mean, variance = tf.nn.moments(x32, axes=[-1], keep_dims=True)
    inv = tf.math.rsqrt(variance + LAYER_NORM_EPSILON) * scale
    y = x32 * inv + (bias - mean * inv)
    return tf.cast(y, out_dtype)


def _feature_axes(x):
  """All axes but the last (the ones a per-feature parameter's gradient sums over)."""
  return list(range(x.shape.ndims - 1))


def lean_layer_norm(x, scale, bias, out_dtype):
  """layer_norm (one-pass statistics) with a hand-written gradient that keeps only x and two per-row statistics
  for the backward; TensorFlow's own gradient of the same ops keeps a float32 copy of x (in bfloat16) and the
  [rows, D] product of the inverse deviation and the scale."""

  @tf.custom_gradient
  def forward(x, scale, bias):
    x32 = tf.cast(x, tf.float32)
    mean, variance = _one_pass_statistics(x32)
    rstd = tf.math.rsqrt(variance + LAYER_NORM_EPSILON)
    y = (x32 - mean) * rstd * scale + bias

    def backward(dy):
      dy32 = tf.cast(dy, tf.float32)
      with tf.control_dependencies([dy]):  # recompute when the gradient arrives, not as soon as x exists
        normed = (tf.cast(x, tf.float32) - mean) * rstd
      axes = _feature_axes(dy32)
      d_normed = dy32 * scale
      dx = rstd * (d_normed - tf.reduce_mean(d_normed, axis=-1, keepdims=True) -
                   normed * tf.reduce_mean(d_normed * normed, axis=-1, keepdims=True))
      return tf.cast(dx, x.dtype), tf.reduce_sum(dy32 * normed, axis=axes), tf.reduce_sum(dy32, axis=axes)

    return tf.cast(y, out_dtype), backward

  with tf.name_scope("layer_norm"):
    return forward(x, scale, bias)


def gelu_tanh(x):
  """flax.linen.gelu default (tanh approximation), as x * sigmoid(2z).

  Identical maths with fewer ops than 0.5x(1+tanh z).
  """
  c = math.sqrt(2.0 / math.pi)
  z = x * (2.0 * c + (2.0 * c * 0.044715) * tf.square(x))
  return x * tf.sigmoid(z)


def gelu_exact(x):
  """GELU with the exact error function, x * Phi(x)."""
  return 0.5 * x * (1.0 + tf.math.erf(x * (1.0 / math.sqrt(2.0))))


GELUS = {"tanh": gelu_tanh, "exact": gelu_exact}


def _gelu(y, approximate=True):
  return gelu_tanh(y) if approximate else gelu_exact(y)


def _gelu_derivative(y, approximate):
  """d GELU(y) / dy, in y's dtype."""
  if approximate:
    c = math.sqrt(2.0 / math.pi)
    square = tf.square(y)
    s = tf.sigmoid(y * (2.0 * c + (2.0 * c * 0.044715) * square))
    # GELU = y * s(z), z = 2c(y + 0.044715 y^3): s + y s (1 - s) dz/dy.
    return s + y * s * (1.0 - s) * (2.0 * c + (6.0 * c * 0.044715) * square)
  phi = tf.exp(-0.5 * tf.square(y)) * (1.0 / math.sqrt(2.0 * math.pi))
  return 0.5 * (1.0 + tf.math.erf(y * (1.0 / math.sqrt(2.0)))) + y * phi


def _times_gelu_derivative(d_out, y, approximate=True):
  return d_out * _gelu_derivative(y, approximate)


def lean_gelu(y, approximate=True):
  """GELU(y) with a hand-written gradient that keeps only y for the backward and recomputes the rest there
  (TensorFlow's own gradient of the tanh form keeps three [rows, mlp_dim] tensors per block)."""

  @tf.custom_gradient
  def forward(y):

    def backward(dout):
      # The derivative depends on y alone: without the control dependency TensorFlow would compute every block's
      # as soon as the forward made y and hold them all until the backward reached them.
      with tf.control_dependencies([dout]):
        return _times_gelu_derivative(dout, y, approximate)

    return _gelu(y, approximate), backward

  return forward(y)


def bias_gelu(x, bias, approximate=True):
  """GELU(x + bias), tanh form if `approximate` else the exact one. The BiasAdd stays a BiasAdd so grappler can
  still fuse it into the MatMul that produced x."""
  with tf.name_scope("gelu"):
    return _gelu(tf.nn.bias_add(x, bias), approximate)


def lean_bias_gelu(x, bias, approximate=True):
  """bias_gelu with lean_gelu's gradient. The BiasAdd stays outside the custom gradient, so it remains the only
  consumer of the MatMul and grappler can still fuse the two."""
  with tf.name_scope("gelu"):
    return lean_gelu(tf.nn.bias_add(x, bias), approximate)


def gelu_matmul(y, kernel, approximate=True, gelu_fn=_gelu):
  """GELU(y) @ kernel (the MLP's activation and second matmul), with TensorFlow's own gradient, which keeps the
  GELU's output (the kernel's gradient needs it) besides whatever the GELU's own gradient keeps."""
  with tf.name_scope("gelu"):
    h = gelu_fn(y, approximate)
  return tf.matmul(h, kernel)


def lean_gelu_matmul(y, kernel, approximate=True, gelu_fn=_gelu, times_derivative_fn=_times_gelu_derivative):
  """gelu_matmul with a hand-written gradient that keeps only y and the kernel: the GELU's output, which the
  kernel's gradient needs, is recomputed when the backward reaches this block instead of being held from the
  forward (one [rows, mlp_dim] tensor per block) and the derivative is computed from y there."""

  @tf.custom_gradient
  def forward(y, kernel):

    def backward(d_out):
      with tf.control_dependencies([d_out]):  # recompute when the gradient arrives (see lean_gelu)
        with tf.name_scope("gelu"):
          h = gelu_fn(y, approximate)
        d_y = times_derivative_fn(tf.matmul(d_out, kernel, transpose_b=True), y, approximate)
        return d_y, tf.matmul(h, d_out, transpose_a=True)

    with tf.name_scope("gelu"):
      h = gelu_fn(y, approximate)
    return tf.matmul(h, kernel), backward

  return forward(y, kernel)


def softmax(scores, out_dtype, in_float32=True):
  """Softmax over the last axis; returns `out_dtype`.

  in_float32: compute it in float32 (bfloat16/float16 scores lose precision in exp and the row sum); otherwise in
  the scores' own dtype, which saves the two casts and keeps the probabilities for the backward at half the size.
  """
  with tf.name_scope("softmax"):
    if not in_float32:
      return tf.cast(tf.nn.softmax(scores), out_dtype)
    return tf.cast(tf.nn.softmax(tf.cast(scores, tf.float32)), out_dtype)


def softmax_backward(probs32, d_probs, out_dtype):
  """The gradient of the scores from the float32 probabilities p and their gradient dp: p * (dp - sum(p * dp))."""
  with tf.name_scope("softmax"):
    d_probs = tf.cast(d_probs, tf.float32)
    return tf.cast(probs32 * (d_probs - tf.reduce_sum(d_probs * probs32, axis=-1, keepdims=True)), out_dtype)


def attention(q, k, v, scale, out_dtype, softmax_fn=softmax):
  """softmax(scale * q k^T) v over the last two axes, with TensorFlow's own gradient (which keeps the scaled q and
  the probabilities for the backward)."""
  probs = softmax_fn(tf.matmul(q * scale, k, transpose_b=True), out_dtype)
  return tf.matmul(probs, v)


def lean_attention(q, k, v, scale, out_dtype, softmax_fn=softmax, softmax_backward_fn=softmax_backward):
  """attention with a hand-written gradient that keeps only q, k and v and recomputes the probabilities in the
  backward (one more [T, head_dim] x [head_dim, T] matmul per head, instead of holding the [heads, T, T]
  probabilities of every layer, in float32, until the backward reaches it)."""

  @tf.custom_gradient
  def forward(q, k, v):

    def backward(d_context):
      with tf.control_dependencies([d_context]):  # recompute when the gradient arrives (see lean_gelu)
        scaled = q * scale
      probs32 = softmax_fn(tf.matmul(scaled, k, transpose_b=True), tf.float32)
      probs = tf.cast(probs32, d_context.dtype)
      d_scores = softmax_backward_fn(probs32, tf.matmul(d_context, v, transpose_b=True), d_context.dtype)
      return (tf.matmul(d_scores, k) * scale, tf.matmul(d_scores, scaled, transpose_a=True),
              tf.matmul(probs, d_context, transpose_a=True))

    return tf.matmul(softmax_fn(tf.matmul(q * scale, k, transpose_b=True), out_dtype), v), backward

  return forward(q, k, v)


def dropout(x, rate):
  """Inverted dropout with drop probability `rate` (training only; the model decides when to call it)."""
  return tf.nn.dropout(x, rate=rate)


def drop_path(x, rate, seed):
  """Stochastic depth: each example of x (the leading axis) is zeroed with probability `rate` and the others scaled
  by 1 / (1 - rate). The draw is stateless, a function of `seed` ([2] int32/int64) alone, so the same seed gives the
  same examples dropped, in any session and after a restart."""
  with tf.name_scope("drop_path"):
    keep = 1.0 - rate
    draw = tf.random.stateless_uniform(tf.shape(x)[:1], seed=seed)
    scale = tf.multiply(tf.cast(draw < keep, tf.float32), 1.0 / keep, name="keep_scale")
    return x * tf.cast(tf.reshape(scale, [-1] + [1] * (x.shape.ndims - 1)), x.dtype)


class KernelSet(
    collections.namedtuple("KernelSet",
                           "name layer_norm bias_gelu gelu_matmul softmax attention dropout drop_path lean_backward")):
  """The chains one backend implements.

  Attributes:
    name: the backend ("plain", "xla", "npu").
    layer_norm: (x, scale, bias, out_dtype) -> normalised x in out_dtype.
    bias_gelu: (x, bias, approximate) -> GELU(x + bias).
    gelu_matmul: (y, kernel, approximate) -> GELU(y) @ kernel (the MLP when nothing is dropped out between the two).
    softmax: (scores, out_dtype) -> softmax over the last axis in out_dtype.
    attention: (q, k, v, scale, out_dtype) -> softmax(scale * q k^T) v, q/k/v [..., T, head_dim].
    dropout: (x, rate) -> x with elements dropped with probability rate and the rest scaled by 1 / (1 - rate).
    drop_path: (x, rate, seed) -> x with whole examples (the leading axis) dropped with probability rate, the rest
      scaled by 1 / (1 - rate), drawn statelessly from seed [2].
    lean_backward: the LEAN_PARTS that use the hand-written gradients (lean_*); () for none.
  """


def _in_jit_scope(fn):
  """fn with its ops (and their gradients) marked for one XLA cluster per call."""

  def wrapped(*args, **kwargs):
    with tf.xla.experimental.jit_scope(compile_ops=True, separate_compiled_gradients=True):
      return fn(*args, **kwargs)

  return wrapped


PLAIN = KernelSet("plain", layer_norm, bias_gelu, gelu_matmul, softmax, attention, dropout, drop_path, ())


def lean_parts(lean_backward):
  """True -> all LEAN_PARTS, False/None -> (), an iterable of part names -> those, in LEAN_PARTS order."""
  if lean_backward is True:
    return LEAN_PARTS
  parts = tuple(lean_backward or ())
  unknown = [p for p in parts if p not in LEAN_PARTS]
  if unknown:
    raise ValueError("lean backward parts must be among %s, got %s" % (", ".join(LEAN_PARTS), ", ".join(unknown)))
  return tuple(p for p in LEAN_PARTS if p in parts)


def for_backend(name, npu_gelu=None, npu_dropout=None, one_pass_layer_norm=True, softmax_in_float32=True,
                lean_backward=True):
  """The KernelSet of backend `name`.

  one_pass_layer_norm, softmax_in_float32: see layer_norm and softmax (the defaults are the reference's).
  lean_backward: hand-written gradients for layer norm (one-pass statistics), GELU, GELU + matmul and attention
    that keep only their inputs for the backward and recompute the rest (lean_layer_norm, lean_gelu,
    lean_gelu_matmul, lean_attention); False: TensorFlow's gradients of the reference ops; or some of LEAN_PARTS
    ("mlp" = the GELU and the MLP's GELU + matmul).

  npu_gelu, npu_dropout: Ascend's ops (npu_unary_ops.gelu(x), npu_ops.dropout(x, keep_prob)), required for "npu";
  launch/npu.py passes them in so that vit_raw never imports npu_bridge. The NPU's GELU is the tanh form, so the
  exact form falls back to the plain ops there; it brings its own gradient, so "mlp" has no lean form there.
  """
  if name not in BACKENDS:
    raise ValueError("kernel backend must be one of %s, got %r" % (", ".join(BACKENDS), name))
  jit = _in_jit_scope if name == "xla" else (lambda fn: fn)
  sm = jit(functools.partial(softmax, in_float32=softmax_in_float32))
  lean = lean_parts(lean_backward)
  ln = lean_layer_norm if "layer_norm" in lean else functools.partial(layer_norm, one_pass=one_pass_layer_norm)
  if "mlp" in lean:
    gelu = lean_bias_gelu
    gelu_mm = functools.partial(lean_gelu_matmul, gelu_fn=jit(_gelu), times_derivative_fn=jit(_times_gelu_derivative))
  else:
    gelu, gelu_mm = bias_gelu, functools.partial(gelu_matmul, gelu_fn=jit(_gelu))
  if "attention" in lean:
    attend = functools.partial(lean_attention, softmax_fn=sm, softmax_backward_fn=jit(softmax_backward))
  else:
    attend = functools.partial(attention, softmax_fn=sm)
  ln, gelu = jit(ln), jit(gelu)
  if name != "npu":
    return KernelSet(name, ln, gelu, gelu_mm, sm, attend, dropout, drop_path, lean)
  if npu_gelu is None or npu_dropout is None:
    raise ValueError("the npu kernel set needs npu_gelu and npu_dropout (launch.npu.kernel_set() passes them)")

  def npu_bias_gelu(x, bias, approximate=True):
    if not approximate:
      return gelu(x, bias, approximate)
    with tf.name_scope("gelu"):
      return npu_gelu(tf.nn.bias_add(x, bias))

  def npu_gelu_matmul(y, kernel, approximate=True):
    # Ascend's GELU brings its own gradient, so the MLP keeps TensorFlow's gradient of the matmul.
    return gelu_matmul(y, kernel, approximate, gelu_fn=lambda y, approximate: npu_gelu(y)
                       if approximate else _gelu(y, approximate))

  def npu_dropout_rate(x, rate):
    return npu_dropout(x, keep_prob=1.0 - rate)

  return KernelSet("npu", ln, npu_bias_gelu, npu_gelu_matmul, sm, attend, npu_dropout_rate, drop_path,
                   tuple(p for p in lean if p != "mlp"))
