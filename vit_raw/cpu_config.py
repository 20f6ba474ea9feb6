"""Session options that make the ViT graph fast on CPU; the trainer and the tools build their sessions from here."""
import os


def usable_cores():
  """Cores this process may run on (a container's CPU set, not the host's core count)."""
  if hasattr(os, "sched_getaffinity"):
    return max(1, len(os.sched_getaffinity(0)))
  return os.cpu_count() or 1


def _is_amd_cpu():
  try:
    with open("/proc/cpuinfo") as f:
      return "AuthenticAMD" in f.read(4096)
  except IOError:
    return False


def use_fast_mkl_paths_on_amd():
  """Lets Intel MKL (linked by intel-tensorflow 1.15, whose fp32 MatMul it runs) take its AVX2/AVX-512 code paths on
  an AMD CPU, where it otherwise falls back to slow generic ones (MKL_DEBUG_CPU_TYPE=5, honoured by the MKL 2019/2020
  it ships; later MKLs ignore it). Does nothing on Intel CPUs, on other builds, or if the variable is already set.
  Must run before the first session; returns True if it set the variable."""
  if "MKL_DEBUG_CPU_TYPE" in os.environ or not _is_amd_cpu():
    return False
  os.environ["MKL_DEBUG_CPU_TYPE"] = "5"
  return True


def fast_cpu_config(intra_op_threads=None, inter_op_threads=None, xla=False, allow_soft_placement=True,
                    xla_fusible_only=False, fast_mkl_on_amd=True):
  """tf.ConfigProto tuned for ViT on a few CPU cores.

  intra_op_threads: threads inside one op (oneDNN/Eigen matmuls); default: all cores of this process.
  inter_op_threads: ops run concurrently; default 1, because ViT is a chain of big matmuls and a second
    concurrent op only steals cores from the matmul that is on the critical path.
  xla: turn on XLA JIT (global_jit_level ON_1) for the whole graph. Measured slower for ViT on both stacks (XLA:CPU
    does not use oneDNN/AMX for the matmuls), so off by default. Takes effect only if this is called before the
    process's first session (TF reads TF_XLA_FLAGS once), or if TF_XLA_FLAGS=--tf_xla_cpu_global_jit is exported.
  xla_fusible_only: with xla, let the auto-clustering take only the fusible elementwise ops and reductions
    (--tf_xla_ops_to_cluster=FUSIBLE), so MatMul stays with oneDNN; only TensorFlow >= 2 knows this flag.
  fast_mkl_on_amd: use_fast_mkl_paths_on_amd() (intel-tensorflow 1.15's fp32 matmuls on AMD CPUs).
  """
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top  (usable_cores needs no TensorFlow)
  if fast_mkl_on_amd:
    use_fast_mkl_paths_on_amd()
  cores = usable_cores()
  config = tf.ConfigProto(intra_op_parallelism_threads=intra_op_threads or cores,
                          inter_op_parallelism_threads=inter_op_threads or 1, allow_soft_placement=allow_soft_placement)
  if xla:
    config.graph_options.optimizer_options.global_jit_level = tf.OptimizerOptions.ON_1
    # On CPU, global_jit_level is silently ignored unless this XLA flag is set before TF first reads its flags
    # (checked with a trace: no xla_run ops without it, on both stacks).
    flags = os.environ.get("TF_XLA_FLAGS", "")
    if "--tf_xla_cpu_global_jit" not in flags:
      flags += " --tf_xla_cpu_global_jit"
    # TF 1.15 aborts on a flag it does not know, so there the whole graph is clustered.
    if xla_fusible_only and tf.__version__[0] != "1" and "--tf_xla_ops_to_cluster" not in flags:
      flags += " --tf_xla_ops_to_cluster=FUSIBLE"
    os.environ["TF_XLA_FLAGS"] = flags.strip()
  return config
