"""vit_raw.kernels: the plain chains equal NumPy, and every backend's chains equal the plain ones in forward and gradient."""
import math

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from launch import device as device_lib
from launch import npu
from tests import numpy_vit
from tests import test_model
from vit_raw import kernels
from vit_raw import model

TINY = test_model.TINY


def _inputs():
  rs = np.random.RandomState(0)
  x = rs.randn(6, 12).astype(np.float32) * 2.0 + 0.5
  return x, rs.randn(12).astype(np.float32), 1.0 + 0.1 * rs.randn(12).astype(np.float32)


def _chains(kernel_set, approximate=True):
  """Each chain applied to variables, and the gradients of a non-trivial function of its output w.r.t. its inputs."""
  x_np, b_np, s_np = _inputs()
  x, b, s = tf.Variable(x_np), tf.Variable(b_np), tf.Variable(s_np)
  weights = tf.constant(np.random.RandomState(1).randn(6, 12).astype(np.float32))
  outs = {
      "layer_norm": kernel_set.layer_norm(x, s, b, tf.float32),
      "gelu": kernel_set.bias_gelu(x, b, approximate),
      "softmax": kernel_set.softmax(x, tf.float32),
  }
  zero = tf.UnconnectedGradients.ZERO
  return {
      k: (y, tf.gradients(tf.reduce_sum(tf.square(y) * weights), [x, b, s], unconnected_gradients=zero))
      for k, y in outs.items()
  }


def _run(fetches):
  with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    return sess.run(fetches)


def _gelu_np(x, approximate):
  if approximate:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
  erf = np.vectorize(math.erf)
  return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


@pytest.mark.parametrize("approximate", [True, False])
def test_plain_chains_equal_numpy(approximate):
  x, b, s = _inputs()
  out = _run({k: y for k, (y, _) in _chains(kernels.PLAIN, approximate).items()})
  mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  np.testing.assert_allclose(out["layer_norm"], (x - mean) / np.sqrt(var + 1e-6) * s + b, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out["gelu"], _gelu_np(x + b, approximate), rtol=1e-5, atol=1e-6)
  e = np.exp(x - x.max(-1, keepdims=True))
  np.testing.assert_allclose(out["softmax"], e / e.sum(-1, keepdims=True), rtol=1e-5, atol=1e-7)


def test_one_pass_layer_norm_equals_two_pass_in_forward_and_gradient():
  x_np, b_np, s_np = _inputs()
  x, b, s = tf.Variable(x_np), tf.Variable(b_np), tf.Variable(s_np)
  outs = [kernels.layer_norm(x, s, b, tf.float32, one_pass=p) for p in (True, False)]
  grads = [tf.gradients(tf.reduce_sum(tf.sin(y)), [x, b, s]) for y in outs]
  (one, two), (g_one, g_two) = _run([outs, grads])
  np.testing.assert_allclose(one, two, rtol=1e-5, atol=1e-5)
  for a, c in zip(g_one, g_two):
    np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-5)


def _assert_chains_equal(kernel_set, approximate=True):
  reference, other = _run([_chains(kernels.PLAIN, approximate), _chains(kernel_set, approximate)])
  for name in reference:
    np.testing.assert_allclose(other[name][0], reference[name][0], rtol=1e-5, atol=1e-6, err_msg=name)
    for g_other, g_ref in zip(other[name][1], reference[name][1]):
      np.testing.assert_allclose(g_other, g_ref, rtol=1e-4, atol=1e-5, err_msg=name + " gradient")


@pytest.mark.parametrize("approximate", [True, False])
def test_xla_chains_equal_plain_in_forward_and_gradient(approximate):
  _assert_chains_equal(kernels.for_backend("xla"), approximate)


def test_xla_chains_and_their_gradients_are_marked_for_compilation():
  _chains(kernels.for_backend("xla"))
  marked = {}
  for op in tf.get_default_graph().get_operations():
    if (op.name.startswith("gelu/") or "/gelu/" in op.name) and op.type not in ("Const", "Identity"):
      try:
        marked[op.name] = op.get_attr("_XlaCompile")
      except ValueError:
        marked[op.name] = False
  assert marked and all(marked.values()), marked
  assert any(name.startswith("gradients") for name in marked)


def test_npu_chains_use_ascends_gelu_and_dropout_and_equal_plain(fake_bridge):
  kernel_set = npu.kernel_set()
  assert kernel_set.name == "npu"
  _assert_chains_equal(kernel_set)
  assert [name for name, _ in fake_bridge.CALLS].count("npu_unary_ops.gelu") == 1
  x = tf.ones([1000])
  kept = _run(kernel_set.dropout(x, 0.25))
  assert ("npu_ops.dropout", 0.75) in [(n, a.get("keep_prob")) for n, a in fake_bridge.CALLS]
  assert set(np.unique(kept)) <= {0.0, np.float32(1 / 0.75)} and 0.6 < (kept > 0).mean() < 0.9


def test_npu_kernel_set_needs_ascends_ops():
  with pytest.raises(ValueError, match="npu_gelu"):
    kernels.for_backend("npu")
  with pytest.raises(ValueError, match="plain, xla, npu"):
    kernels.for_backend("cuda")


@pytest.mark.parametrize("backend", ["xla", "npu"])
def test_model_float32_logits_with_each_backend_equal_the_numpy_reference(backend, fake_bridge):
  kernel_set = npu.kernel_set() if backend == "npu" else kernels.for_backend(backend)
  params = numpy_vit.random_official_params(16, 2, 2, 32, 4, 5, 5, seed=1)
  images = np.random.RandomState(2).uniform(-1, 1, [3, 8, 8, 3]).astype(np.float32)
  expected = numpy_vit.forward(params, images, patch=4, num_heads=2)
  sess, x, y = test_model._load_official(params, TINY, 5, (8, 8), kernels=kernel_set)  # pylint: disable=protected-access
  got = sess.run(y, {x: images})
  assert np.abs(expected).max() > 0.5
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_bfloat16_model_casts_each_weight_once_and_has_no_cast_round_trip():
  images = tf.placeholder(tf.float32, [None, 8, 8, 3])
  logits = model.vit(images, TINY, 5, is_training=True, compute_dtype=tf.bfloat16)
  tf.gradients(tf.reduce_sum(logits), tf.trainable_variables())
  casts = [op for op in tf.get_default_graph().get_operations() if op.type == "Cast"]
  weight_reads = {v.value().name for v in tf.trainable_variables()}
  cast_weights = [op.inputs[0].name for op in casts if op.inputs[0].name in weight_reads]
  # The 8 dense weights of each block, embedding bias, class token and position embedding are each cast once (the
  # patch kernel is cast after its reshape; layer norm parameters and the head stay float32), never twice.
  assert len(cast_weights) == len(set(cast_weights)) == 8 * TINY.num_layers + 3
  # No value goes float32 -> bfloat16 -> float32 (or back) through two Casts in a row, forward or backward.
  assert not [op.name for op in casts if op.inputs[0].op.type == "Cast"]


def test_trainer_picks_ascends_kernels_on_the_npu_and_the_flag_elsewhere(fake_bridge):
  assert device_lib.kernel_set("npu").name == "npu"
  assert device_lib.kernel_set("cpu", "xla").name == "xla"
  assert device_lib.kernel_set("cpu", "plain").name == "plain"
  assert device_lib.kernel_set("cpu").name == device_lib.AUTO_KERNELS[tf.__version__[0]]
