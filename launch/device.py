"""Backend choice (NPU, GPU, CPU), the compute dtype each precision mode means there, and the CPU/GPU session config.

The NPU session config lives in `launch.npu` (the one module that imports npu_bridge).
"""
import importlib

from absl import logging
import numpy as np
import tensorflow.compat.v1 as tf

from launch import npu

# Precision modes that ask for reduced-precision compute; the others keep float32.
_REDUCED = ("allow_mix_precision", "force_fp16", "allow_fp32_to_fp16")


def visible_gpus():
  """Names of the GPUs TensorFlow can use (empty on CPU-only builds)."""
  if not tf.test.is_built_with_cuda() and not tf.test.is_built_with_rocm():
    return []  # listing devices would start a session's worth of runtime just to learn there is no GPU
  from tensorflow.python.client import device_lib  # pylint: disable=g-import-not-at-top
  return [d.name for d in device_lib.list_local_devices() if d.device_type == "GPU"]


def resolve_device(requested):
  """'auto' -> 'npu' when npu_bridge imports, else 'gpu' when one is visible, else 'cpu'; others are checked."""
  if requested == "auto":
    if npu.available():
      return "npu"
    return "gpu" if visible_gpus() else "cpu"
  if requested == "npu" and not npu.available():
    raise ValueError("--device=npu but npu_bridge does not import (%s); install the Ascend TF adapter or use "
                     "--device=cpu/gpu" % npu.import_error())
  if requested == "gpu" and not visible_gpus():
    raise ValueError("--device=gpu but TensorFlow sees no GPU; use --device=cpu or a GPU build of TensorFlow")
  return requested


def resolve_precision(device, precision_mode):
  """'auto' -> allow_mix_precision on NPU and GPU, must_keep_origin_dtype (float32) on the CPU."""
  if precision_mode != "auto":
    return precision_mode
  return "must_keep_origin_dtype" if device == "cpu" else "allow_mix_precision"


_BF16_OK = {}


def cpu_has_bfloat16():
  """Probes once whether this TF build runs the model's key ops in bfloat16 on the CPU.

  A tiny graph of BatchMatMulV2, MatMul, Softmax, Erf/Sigmoid and their gradients; a missing kernel raises at run.
  """
  if "ok" in _BF16_OK:
    return _BF16_OK["ok"]
  graph = tf.Graph()
  try:
    with graph.as_default():
      x = tf.constant(np.random.RandomState(0).randn(2, 3, 4, 4).astype(np.float32))
      w = tf.Variable(np.eye(4, dtype=np.float32))
      xb = tf.cast(x, tf.bfloat16)
      y = tf.matmul(xb, xb, transpose_b=True)
      y = tf.nn.softmax(tf.cast(y, tf.float32))
      z = tf.reshape(tf.cast(y, tf.bfloat16), [-1, 4])
      z = tf.matmul(z, tf.cast(w, tf.bfloat16))
      z = tf.math.erf(z) + tf.sigmoid(z)
      loss = tf.reduce_sum(tf.cast(z, tf.float32))
      grad = tf.gradients(loss, w)[0]
      with tf.Session(graph=graph, config=tf.ConfigProto(device_count={"GPU": 0})) as sess:
        sess.run(tf.global_variables_initializer())
        sess.run(grad)
    ok = True
  except (tf.errors.OpError, TypeError, ValueError):
    ok = False
  _BF16_OK["ok"] = ok
  return ok


def compute_dtype(device, precision_mode):
  """The model's compute dtype for `precision_mode` on `device`.

  NPU: float32 graphs (the adapter lowers precision itself according to precision_mode). GPU: float16 for the
  reduced modes. CPU: bfloat16 for the reduced modes when the build has the kernels, else float32 with one notice.
  """
  if device == "npu" or precision_mode not in _REDUCED:
    return tf.float32
  if device == "gpu":
    return tf.float16
  if cpu_has_bfloat16():
    return tf.bfloat16
  logging.warning("--precision_mode=%s: this TensorFlow build lacks CPU bfloat16 kernels; computing in float32",
                  precision_mode)
  return tf.float32


def session_config(device):
  """The tf.ConfigProto for `device`: on the CPU the model package's fast options (vit_raw/session_config.py, when
  it exists: all cores inside an op, one op at a time); GPU memory grows on demand; the NPU starts from a plain
  config that launch.npu completes."""
  config = None
  if device == "cpu":
    try:
      module = importlib.import_module("vit_raw.session_config")
    except ImportError:
      module = None
    fast = getattr(module, "fast_cpu_config", None)
    if callable(fast):
      config = fast()
  if config is None:
    config = tf.ConfigProto()
  config.allow_soft_placement = True
  if device == "gpu":
    config.gpu_options.allow_growth = True
  if device == "cpu":
    config.device_count["GPU"] = 0
  return config
