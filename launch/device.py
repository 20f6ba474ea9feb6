"""Backend choice (NPU, GPU, CPU), the compute dtype each precision mode means there, and the CPU/GPU session config.

The NPU session config lives in `launch.npu` (the one module that imports npu_bridge).
"""
import os

from absl import logging
import numpy as np
import tensorflow.compat.v1 as tf

from launch import npu
from launch.flags import REDUCED_PRECISION_MODES
from vit_raw import kernels
from vit_raw.cpu_config import fast_cpu_config


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


# The CPU's own bfloat16 instructions (/proc/cpuinfo flags): without either, oneDNN converts bf16 to float32 and back.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# TF 1.x never computes in bfloat16 on the CPU for the allow modes: measured side by side (docs/benchmarks.md,
# "bfloat16 on the CPU: one rule per stack"), its bf16 step is several times slower while its bf16 matmul ties fp32's.
TF1_BF16_REASON = ("intel-tensorflow 1.15's bfloat16 ViT training step runs 3-7x slower than float32 "
                   "(docs/benchmarks.md)")
# The --precision_mode that computes in bfloat16 on the CPU whatever the rule says (where the kernels exist).
FORCED_BF16_MODE = "force_fp16"

_BF16 = {}  # per process: "kernels" -> bool, "status" -> (usable, reason)


def _tf_major():
  return tf.__version__.split(".")[0]


def cpu_flags(path="/proc/cpuinfo"):
  """The CPU's feature flags (the first "flags" line of /proc/cpuinfo); empty where there is no such file."""
  try:
    with open(path) as f:
      for line in f:
        if line.startswith("flags"):
          return set(line.split(":", 1)[1].split())
  except (IOError, OSError):
    pass
  return set()


def _bfloat16_kernels_run():
  """Whether this TF build runs the model's key ops in bfloat16 on the CPU: a tiny graph of BatchMatMulV2, MatMul,
  Softmax, Erf/Sigmoid and their gradients (a missing kernel raises at run time)."""
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
    return True
  except (tf.errors.OpError, TypeError, ValueError):
    return False


def bfloat16_kernels_run():
  """_bfloat16_kernels_run, asked once per process."""
  if "kernels" not in _BF16:
    _BF16["kernels"] = _bfloat16_kernels_run()
  return _BF16["kernels"]


def _bfloat16_verdict():
  """(usable, reason) of cpu_bfloat16_status, decided afresh."""
  if _tf_major() == "1":
    return False, TF1_BF16_REASON
  if not bfloat16_kernels_run():
    return False, "this TensorFlow build lacks CPU bfloat16 kernels"
  native = sorted(set(NATIVE_BF16_FLAGS) & cpu_flags())
  if not native:
    return False, "this CPU has no native bfloat16 (no %s flag in /proc/cpuinfo)" % " or ".join(NATIVE_BF16_FLAGS)
  return True, "TF %s with native bfloat16 on this CPU (%s)" % (tf.__version__, ", ".join(native))


def cpu_bfloat16_status():
  """(usable, reason): whether the CPU computes in bfloat16 for the allow modes (allow_mix_precision,
  allow_fp32_to_fp16): one rule per TensorFlow major version, from the steps measured in docs/benchmarks.md.

  TF 1.x: never (TF1_BF16_REASON). TF 2.x: where the bf16 kernels run and the CPU has native bfloat16
  (NATIVE_BF16_FLAGS), the CPUs whose measured bf16 step is faster. Nothing is timed: a matmul probe on a shared
  machine moved by 3x from run to run (issue 20); the same machine and TensorFlow always get the same answer.
  """
  if "status" not in _BF16:
    _BF16["status"] = _bfloat16_verdict()
  return _BF16["status"]


def cpu_has_bfloat16():
  """True when the CPU compute for the allow modes is bfloat16 (see cpu_bfloat16_status)."""
  return cpu_bfloat16_status()[0]


def compute_dtype(device, precision_mode):
  """The model's compute dtype for `precision_mode` on `device`, the CPU's choice logged with its reason.

  NPU: float32 graphs (the adapter lowers precision itself according to precision_mode). GPU: float16 for the
  reduced modes. CPU: bfloat16 for FORCED_BF16_MODE where the kernels exist; for the allow modes bfloat16 where
  cpu_bfloat16_status says so, else float32.
  """
  if device == "npu" or precision_mode not in REDUCED_PRECISION_MODES:
    return tf.float32
  if device == "gpu":
    return tf.float16
  if precision_mode == FORCED_BF16_MODE:
    if not bfloat16_kernels_run():
      logging.warning("--precision_mode=%s: this TensorFlow build lacks CPU bfloat16 kernels; computing in float32",
                      precision_mode)
      return tf.float32
    logging.info("--precision_mode=%s: computing in bfloat16 on the CPU, as forced%s", precision_mode,
                 "; expect a slower step: " + TF1_BF16_REASON if _tf_major() == "1" else "")
    return tf.bfloat16
  usable, reason = cpu_bfloat16_status()
  if usable:
    logging.info("--precision_mode=%s: computing in bfloat16 on the CPU: %s", precision_mode, reason)
    return tf.bfloat16
  logging.warning("--precision_mode=%s: %s; computing in float32 (--precision_mode=%s forces bfloat16)", precision_mode,
                  reason, FORCED_BF16_MODE)
  return tf.float32


def device_config(device):
  """The tf.ConfigProto for `device`: on the CPU the model package's fast options (vit_raw/cpu_config.py: all cores
  inside an op, one op at a time); GPU memory grows on demand; on the NPU a plain config that `session_config`
  completes with the adapter's options."""
  config = fast_cpu_config() if device == "cpu" else tf.ConfigProto()
  config.allow_soft_placement = True
  if device == "gpu":
    config.gpu_options.allow_growth = True
  if device == "cpu":
    config.device_count["GPU"] = 0
  return config


def session_config(plan):
  """The session config of a training run: device_config, plus on the NPU the adapter's options from the plan
  (precision mode, iterations per loop, dumps, profiling, fusion switch file)."""
  config = device_config(plan.device)
  if plan.device != "npu":
    return config
  debug = plan.debug
  profile_dir = os.path.abspath(os.path.join(plan.model_dir, "profile"))
  return npu.add_npu_options(config, plan.precision.mode, plan.schedule.iterations, over_dump=debug.over_dump_dir
                             is not None, over_dump_path=debug.npu_dump_dir, data_dump=debug.data_dump_dir is not None,
                             data_dump_path=debug.npu_dump_dir, data_dump_steps=debug.dump_steps,
                             profiling=debug.profile_dir is not None, profiling_options=debug.profiling_options or
                             npu.default_profiling_options(profile_dir), fusion_switch_file=debug.fusion_switch_file,
                             distributed=plan.dist.num_ranks > 1)


# --kernels=auto on the CPU/GPU, per TensorFlow major version, from the side-by-side runs in docs/benchmarks.md:
# on TF 2.21 each chain in its own XLA cluster (never slower in 5 pairs); on TF 1.15 the jit scopes pull the matmuls
# into XLA too (Eigen instead of MKL, +0.8 GB peak memory), so the plain ops stay.
AUTO_KERNELS = {"1": "plain", "2": "xla"}

# --lean_backward=auto per compute dtype, from the side-by-side runs in docs/benchmarks.md: in float32 every lean
# gradient is as fast or faster and together they take 1.1-1.3 GB off ViT-B/16's peak; in bfloat16 the recomputed
# attention probabilities and GELU cost 2 % and 6 % of the step (XLA's bf16 elementwise code), so only layer norm's.
AUTO_LEAN_BACKWARD = {"float32": kernels.LEAN_PARTS, "bfloat16": ("layer_norm",), "float16": ("layer_norm",)}


def lean_backward_parts(values, compute_dtype):
  """--lean_backward (a list: auto | none | some of layer_norm, attention, mlp) -> the parts for this compute dtype."""
  values = [v.strip() for v in values if v.strip()]
  if values in (["auto"], []):
    return AUTO_LEAN_BACKWARD[tf.as_dtype(compute_dtype).name]
  if values == ["none"]:
    return ()
  return kernels.lean_parts(values)


def resolve_kernels(device, choice="auto"):
  """--kernels -> "npu" (auto on the NPU: Ascend's GELU and dropout), "plain" or "xla" (auto elsewhere: AUTO_KERNELS
  of this TensorFlow)."""
  if choice == "auto":
    return "npu" if device == "npu" else AUTO_KERNELS.get(tf.__version__[0], "plain")
  return choice


def kernel_set(kernels_name, lean_backward=True):
  """The vit_raw.kernels.KernelSet of a resolved --kernels (resolve_kernels): "npu" = launch/npu.py's set;
  lean_backward: the chains with hand-written gradients (True: all, False: none, or lean_backward_parts(...))."""
  if kernels_name == "npu":
    return npu.kernel_set(lean_backward)
  return kernels.for_backend(kernels_name, lean_backward=lean_backward)
