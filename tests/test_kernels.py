"""vit_raw.kernels: the plain chains equal NumPy, and every backend's chains equal the plain ones in forward and
gradient."""
import math

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from launch import device as device_lib
from launch import npu
from tests import numpy_vit
from tests import test_model
from vit_raw import configs
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
      "gelu_matmul": kernel_set.gelu_matmul(x + b,
                                            tf.reshape(s, [12, 1]) * tf.reshape(s, [1, 12]), approximate),
      "softmax": kernel_set.softmax(x, tf.float32),
      "attention": kernel_set.attention(x, x * s, x + b, 0.3, tf.float32),
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
  kernel = np.outer(s, s)
  np.testing.assert_allclose(out["gelu_matmul"], _gelu_np(x + b, approximate).dot(kernel), rtol=1e-5, atol=1e-5)
  e = np.exp(x - x.max(-1, keepdims=True))
  np.testing.assert_allclose(out["softmax"], e / e.sum(-1, keepdims=True), rtol=1e-5, atol=1e-7)
  scores = 0.3 * x.dot((x * s).T)
  e = np.exp(scores - scores.max(-1, keepdims=True))
  np.testing.assert_allclose(out["attention"], (e / e.sum(-1, keepdims=True)).dot(x + b), rtol=1e-5, atol=1e-5)


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
      # The attention's gradient goes through p * (dp - sum(p dp)), which cancels: float32 rounding of the
      # largest entries shows in the smallest ones, so the absolute tolerance follows the gradient's scale.
      np.testing.assert_allclose(g_other, g_ref, rtol=1e-4, atol=max(1e-5, 5e-5 * np.abs(g_ref).max()),
                                 err_msg=name + " gradient")


@pytest.mark.parametrize("backend", ["plain", "xla"])
@pytest.mark.parametrize("lean_backward", [True, False])
@pytest.mark.parametrize("approximate", [True, False])
def test_each_backend_equals_the_reference_in_forward_and_gradient(backend, lean_backward, approximate):
  kernel_set = kernels.for_backend(backend, lean_backward=lean_backward)
  assert kernel_set.lean_backward == (kernels.LEAN_PARTS if lean_backward else ())
  _assert_chains_equal(kernel_set, approximate)


def _kept_for_the_backward(lean_backward, dtype):
  """The forward activations of a training step that gradient ops read (so they stay in memory until the backward
  reaches them): tensors computed from the images, not weights or their casts, not shapes or constants."""
  config = configs.get_config("tiny", hidden_size=32, num_heads=2, mlp_dim=128)
  logits = model.vit(tf.placeholder(tf.float32, [2, 16, 16, 3]), config, 10, True, compute_dtype=dtype,
                     kernels=kernels.for_backend("plain", lean_backward=lean_backward))
  tf.gradients(tf.reduce_sum(logits), tf.trainable_variables())
  weights = {v.value().name for v in tf.trainable_variables()}

  def buffer(t):  # Identity/IdentityN outputs share their input's memory
    return buffer(t.op.inputs[t.value_index if t.op.type == "IdentityN" else 0]) if t.op.type in ("Identity",
                                                                                                  "IdentityN") else t

  kept = set()
  for op in tf.get_default_graph().get_operations():
    if op.name.startswith("gradients"):
      kept.update(buffer(t) for t in op.inputs if not t.op.name.startswith("gradients") and t.dtype.is_floating)
  return [
      t for t in kept
      if t.dtype.is_floating and t.op.type not in ("Const", "ReadVariableOp", "VarHandleOp", "VariableV2") and
      not (t.op.type in ("Cast", "Reshape") and t.op.inputs[0].name in weights)
  ]


def _nbytes(tensors):
  """Bytes of `tensors` by their static shapes."""
  return sum(t.dtype.size * int(np.prod(t.shape.as_list())) for t in tensors)


@pytest.mark.parametrize("dtype", [tf.float32, tf.bfloat16])
def test_lean_backward_keeps_only_the_chains_inputs_and_outputs(dtype):
  """Per block the lean backward keeps the residual stream after each half, the layer norms' outputs, q/k/v, the
  attention context, the GELU's input and per-row statistics: nothing of size heads x T x T, not the GELU's output,
  no float32 copy of a bfloat16 activation. TensorFlow's own gradients keep the probabilities and more on top."""
  with tf.Graph().as_default():
    lean = _kept_for_the_backward(True, dtype)
  with tf.Graph().as_default():
    autodiff = _kept_for_the_backward(False, dtype)
  rows, d, m, t, heads, layers = 2 * 17, 32, 128, 17, 2, 4
  assert not [x.name for x in lean if x.shape.as_list()[-2:] == [t, t]]
  # (The class token's final layer norm feeds the float32 head, by design.)
  assert not [x.name for x in lean if x.dtype != dtype and x.shape.as_list()[-1] != 1 and "encoder_norm" not in x.name]
  stats = 4 * 2 * (layers * 2 + 1) * rows  # mean and 1/std per row of each layer norm, float32
  # The patches, the patch kernel's cast, the stream's start; the class-token rows going into the float32 head.
  embedding = dtype.size * (2 * 16 * 48 + 48 * d + rows * d) + 2 * 4 * 2 * d
  per_block = dtype.size * rows * (8 * d + m)
  assert _nbytes(lean) <= layers * per_block + stats + embedding, sorted(x.name for x in lean)
  assert _nbytes(autodiff) >= _nbytes(lean) + layers * (heads * t * t + rows * m) * dtype.size
  assert [x.name for x in autodiff if x.shape.as_list()[-2:] == [t, t]]


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
  # Ascend's GELU in both GELU chains: bias + GELU, and GELU + the MLP's second matmul.
  assert [name for name, _ in fake_bridge.CALLS].count("npu_unary_ops.gelu") == 2
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
  load = test_model._load_official  # pylint: disable=protected-access
  sess, x, y = load(params, TINY, 5, (8, 8), kernels=kernel_set)
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
  resolve = device_lib.resolve_kernels
  assert (resolve("npu"), resolve("cpu", "xla"), resolve("gpu", "plain")) == ("npu", "xla", "plain")
  assert resolve("cpu") == resolve("gpu") == device_lib.AUTO_KERNELS[tf.__version__[0]]
  assert device_lib.kernel_set(resolve("npu")).name == "npu"
  assert device_lib.kernel_set(resolve("cpu", "xla")).name == "xla"
  assert device_lib.kernel_set(resolve("cpu", "plain")).name == "plain"
  # --lean_backward reaches every backend; auto = all parts in float32, layer norm's alone in reduced precision.
  parts = device_lib.lean_backward_parts
  assert parts(["auto"], tf.float32) == ("layer_norm", "attention", "mlp")
  assert parts(["auto"], tf.bfloat16) == parts(["auto"], tf.float16) == ("layer_norm",)
  assert parts(["none"], tf.float32) == () and parts(["mlp", "layer_norm"], tf.bfloat16) == ("layer_norm", "mlp")
  assert device_lib.kernel_set("xla", parts(["attention"], tf.float32)).lean_backward == ("attention",)
  assert device_lib.kernel_set(resolve("cpu")).lean_backward == kernels.LEAN_PARTS
  assert device_lib.kernel_set("npu").lean_backward == ("layer_norm", "attention")  # Ascend's GELU has its own
  assert device_lib.kernel_set("npu", lean_backward=False).lean_backward == ()


@pytest.mark.parametrize("part", ["layer_norm", "attention", "mlp"])
def test_each_lean_part_alone_equals_the_reference(part):
  kernel_set = kernels.for_backend("plain", lean_backward=[part])
  assert kernel_set.lean_backward == (part,)
  _assert_chains_equal(kernel_set)
