"""The elementwise chains around the matmuls (layer norm, bias + GELU, softmax, dropout), one set per backend.

The model asks a `KernelSet` for each chain instead of writing the ops itself, so a backend can swap in its own
implementation without touching the model:
  plain  the reference: TensorFlow's standard ops, which grappler/oneDNN fuse where they can. Always there.
  xla    the same ops, each chain inside its own `jit_scope`, so XLA fuses the chain (and its gradient) into one
         kernel while MatMul stays with oneDNN.
  npu    Ascend's GELU (tanh form) and dropout ops; launch/npu.py builds it, because only that module imports
         npu_bridge.
Every chain opens a name scope (layer_norm, gelu, softmax) so a trace can be grouped by chain (tools.bench_model).
"""
import collections
import functools
import math

import tensorflow.compat.v1 as tf

LAYER_NORM_EPSILON = 1e-6  # flax.linen.LayerNorm default, which the official checkpoints were trained with.
BACKENDS = ("plain", "xla", "npu")


def layer_norm(x, scale, bias, out_dtype, one_pass=True):
  """Layer norm over the last axis with float32 statistics; returns `out_dtype`.

  one_pass: the variance as E[x^2] - E[x]^2, both means from one read of x (the inputs of a ViT block are O(1), so
  the cancellation is harmless in float32); otherwise tf.nn.moments (mean, then the squared deviations).
  """
  with tf.name_scope("layer_norm"):
    x32 = tf.cast(x, tf.float32)
    if one_pass:
      mean = tf.reduce_mean(x32, axis=-1, keepdims=True)
      variance = tf.maximum(tf.reduce_mean(tf.square(x32), axis=-1, keepdims=True) - tf.square(mean), 0.0)
    else:
      mean, variance = tf.nn.moments(x32, axes=[-1], keep_dims=True)
    inv = tf.math.rsqrt(variance + LAYER_NORM_EPSILON) * scale
    y = x32 * inv + (bias - mean * inv)
    return tf.cast(y, out_dtype)


def gelu_tanh(x):
  """flax.linen.gelu default (tanh approximation), as x * sigmoid(2z): identical maths with fewer ops than 0.5x(1+tanh z)."""
  c = math.sqrt(2.0 / math.pi)
  z = x * (2.0 * c + (2.0 * c * 0.044715) * tf.square(x))
  return x * tf.sigmoid(z)


def gelu_exact(x):
  """GELU with the exact error function, x * Phi(x)."""
  return 0.5 * x * (1.0 + tf.math.erf(x * (1.0 / math.sqrt(2.0))))


GELUS = {"tanh": gelu_tanh, "exact": gelu_exact}


def bias_gelu(x, bias, approximate=True):
  """GELU(x + bias), tanh form if `approximate` else the exact one. The BiasAdd stays a BiasAdd so grappler can
  still fuse it into the MatMul that produced x."""
  with tf.name_scope("gelu"):
    y = tf.nn.bias_add(x, bias)
    return gelu_tanh(y) if approximate else gelu_exact(y)


def softmax(scores, out_dtype, in_float32=True):
  """Softmax over the last axis; returns `out_dtype`.

  in_float32: compute it in float32 (bfloat16/float16 scores lose precision in exp and the row sum); otherwise in
  the scores' own dtype, which saves the two casts and keeps the probabilities for the backward at half the size.
  """
  with tf.name_scope("softmax"):
    if not in_float32:
      return tf.cast(tf.nn.softmax(scores), out_dtype)
    return tf.cast(tf.nn.softmax(tf.cast(scores, tf.float32)), out_dtype)


def dropout(x, rate):
  """Inverted dropout with drop probability `rate` (training only; the model decides when to call it)."""
  return tf.nn.dropout(x, rate=rate)


class KernelSet(collections.namedtuple("KernelSet", "name layer_norm bias_gelu softmax dropout")):
  """The chains one backend implements.

  Attributes:
    name: the backend ("plain", "xla", "npu").
    layer_norm: (x, scale, bias, out_dtype) -> normalised x in out_dtype.
    bias_gelu: (x, bias, approximate) -> GELU(x + bias).
    softmax: (scores, out_dtype) -> softmax over the last axis in out_dtype.
    dropout: (x, rate) -> x with elements dropped with probability rate and the rest scaled by 1 / (1 - rate).
  """


def _in_jit_scope(fn):
  """fn with its ops (and their gradients) marked for one XLA cluster per call."""

  def wrapped(*args, **kwargs):
    with tf.xla.experimental.jit_scope(compile_ops=True, separate_compiled_gradients=True):
      return fn(*args, **kwargs)

  return wrapped


PLAIN = KernelSet("plain", layer_norm, bias_gelu, softmax, dropout)


def for_backend(name, npu_gelu=None, npu_dropout=None, one_pass_layer_norm=True, softmax_in_float32=True):
  """The KernelSet of backend `name`.

  one_pass_layer_norm, softmax_in_float32: see layer_norm and softmax (the defaults are the reference's).

  npu_gelu, npu_dropout: Ascend's ops (npu_unary_ops.gelu(x), npu_ops.dropout(x, keep_prob)), required for "npu";
  launch/npu.py passes them in so that vit_raw never imports npu_bridge. The NPU's GELU is the tanh form, so the
  exact form falls back to the plain ops there.
  """
  ln = functools.partial(layer_norm, one_pass=one_pass_layer_norm)
  sm = functools.partial(softmax, in_float32=softmax_in_float32)
  if name == "plain":
    return KernelSet("plain", ln, bias_gelu, sm, dropout)
  if name == "xla":
    return KernelSet("xla", _in_jit_scope(ln), _in_jit_scope(bias_gelu), _in_jit_scope(sm), dropout)
  if name == "npu":
    if npu_gelu is None or npu_dropout is None:
      raise ValueError("the npu kernel set needs npu_gelu and npu_dropout (launch.npu.kernel_set() passes them)")

    def npu_bias_gelu(x, bias, approximate=True):
      if not approximate:
        return bias_gelu(x, bias, approximate)
      with tf.name_scope("gelu"):
        return npu_gelu(tf.nn.bias_add(x, bias))

    def npu_dropout_rate(x, rate):
      return npu_dropout(x, keep_prob=1.0 - rate)

    return KernelSet("npu", ln, npu_bias_gelu, sm, npu_dropout_rate)
  raise ValueError("kernel backend must be one of %s, got %r" % (", ".join(BACKENDS), name))
