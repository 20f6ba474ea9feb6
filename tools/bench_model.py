"""Times full ViT training steps (forward, backward, optimizer) in graph mode and compares them to a large matmul.

  python -m tools.bench_model --model ViT-B/16 --image_size 224 --batch_size 8 [--dtype bfloat16] [--steps 10]

Prints img/s, achieved GFLOP/s (matmul FLOPs counted analytically, 2 per multiply-add, training = 3x forward)
and the ratio to a square matmul of the same dtype timed in the same process right after each step, so the
ratio stays meaningful when other jobs share the cores. img/s is reported for the median and for the best step.
The step is the trainer's own (launch/train_graph.py), global-norm clipping included, on data held in variables.
"""
import collections
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402

from vit_raw.model_input import scale_input  # noqa: E402
from launch import device as device_lib  # noqa: E402
from launch import plan as plan_lib  # noqa: E402
from launch import train_graph  # noqa: E402
from tools import bench_common  # noqa: E402
from tools import command  # noqa: E402
from tools.command import UsageError  # noqa: E402
from vit_raw import configs  # noqa: E402
from vit_raw import model  # noqa: E402
from vit_raw import cpu_config  # noqa: E402
from vit_raw import kernels  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "ViT-B/16", "Model variant, e.g. ViT-B/16, ViT-Ti/16.")
for _field in configs.SHAPE_FIELDS:
  flags.DEFINE_integer(_field, None, "Override the model's %s (as the trainer's flag of that name)." % _field)
flags.DEFINE_enum("stem", None, list(configs.STEMS), "Override the model's stem (as the trainer's --stem).")
flags.DEFINE_integer("image_size", 224, "Square input image side in pixels.")
flags.DEFINE_integer("batch_size", 8, "Images per training step.")
flags.DEFINE_integer("num_classes", 1000, "Classes of the head.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16", "float16"], "Compute dtype (variables stay float32).")
flags.DEFINE_enum("optimizer", "adam", ["adam", "adamw", "sgd", "momentum"], "Optimizer of the timed step.")
flags.DEFINE_integer("steps", 10, "Timed training steps.")
flags.DEFINE_integer("warmup", 3, "Untimed steps first (graph optimisation, allocator warm-up).")
flags.DEFINE_bool("xla", False, "XLA JIT for the whole graph (global_jit_level ON_1).")
flags.DEFINE_bool("xla_fusible", False, "With --xla: auto-cluster only the fusible elementwise ops (TF 2 only).")
flags.DEFINE_enum(
    "kernels", "auto", ["auto", "plain", "xla"], "vit_raw.kernels backend of layer norm, GELU and "
    "softmax; auto = the trainer's choice for this TensorFlow (launch/device.py).")
flags.DEFINE_bool("ln_one_pass", True, "Layer-norm statistics in one pass (E[x^2] - E[x]^2).")
flags.DEFINE_list(
    "lean_backward", ["auto"], "Chains with hand-written gradients (vit_raw.kernels): auto (the "
    "trainer's choice for the dtype), none, or a comma list of layer_norm, attention, mlp.")
flags.DEFINE_bool("softmax_f32", True, "Attention softmax in float32 (else in the compute dtype).")
flags.DEFINE_bool("fast_mkl_on_amd", True, "MKL_DEBUG_CPU_TYPE=5 on AMD CPUs (intel-tensorflow 1.15's matmuls).")
flags.DEFINE_integer("intra_op_threads", 0, "Threads per op; 0 = all cores.")
flags.DEFINE_integer("inter_op_threads", 0, "Concurrent ops; 0 = the fast_cpu_config default (1).")
flags.DEFINE_enum("gelu", "tanh", ["tanh", "exact"], "GELU form.")
flags.DEFINE_integer("matmul_size", 2048, "Side of the reference square matmul; 0 skips it.")
flags.DEFINE_string("trace", "", "If set, write a Chrome trace (timeline JSON) of one step to this path.")
flags.DEFINE_bool("forward_only", False, "Time the forward pass only (inference).")
flags.DEFINE_bool("breakdown", True,
                  "Trace one extra step and print its op time grouped by kind (matmul, layer norm...).")

# Kinds of the per-op breakdown, in print order. An op is put in the first kind whose test it passes (see op_kind).
KINDS = ("matmul", "layer norm", "gelu", "softmax", "bias add", "casts", "optimizer", "xla cluster", "other")


class MatmulProbe(object):
  """A size x size matmul in `dtype` in its own graph and session, timed between training steps.

  Interleaving it with the steps means both see the same machine load, so their ratio stays meaningful when other
  jobs share the cores.
  """

  def __init__(self, config, dtype, size):
    self.size = size
    self.graph = tf.Graph()
    with self.graph.as_default():
      # Operands cast once into variables so the timed op is the matmul alone.
      a = tf.Variable(tf.cast(tf.random_normal([size, size]), dtype), trainable=False)
      b = tf.Variable(tf.cast(tf.random_normal([size, size]), dtype), trainable=False)
      self.op = tf.matmul(a, b).op
      self.sess = tf.Session(graph=self.graph, config=config)
      self.sess.run(tf.global_variables_initializer())
    for _ in range(2):
      self.sess.run(self.op)

  def gflops(self, runs=3):
    """Best-of-`runs` GFLOP/s now."""
    best = min(bench_common.seconds(lambda: self.sess.run(self.op)) for _ in range(runs))
    return 2.0 * self.size**3 / best / 1e9


def op_kind(name, op_type):
  """Which KINDS entry a traced op (node name, op type) belongs to.

  The optimizer is told by its scopes (Adam/Momentum slots and apply ops, the global-norm clipping), the fused
  chains by the name scopes vit_raw.kernels opens (layer_norm, gelu, softmax), whatever the op type inside them;
  the gradient of an op sits under gradients/<the op's scope>, so the backward of each chain is counted with it.
  """
  lower = name.lower()
  if (op_type.startswith(("Apply", "ResourceApply", "_MklApply")) or "/adam" in lower or lower.startswith("adam") or
      "momentum" in lower or "clip_by_global_norm" in lower or "global_norm" in lower):
    return "optimizer"
  if "MatMul" in op_type or "Einsum" in op_type or "Conv" in op_type:
    return "matmul"
  if "layer_norm" in lower or "/moments" in lower:
    return "layer norm"
  if "/gelu" in lower:
    return "gelu"
  if "softmax" in lower or "Softmax" in op_type:
    return "softmax"
  if op_type.startswith(("BiasAdd", "_MklBiasAdd")):
    return "bias add"
  if op_type in ("Cast", "_MklCast"):
    return "casts"
  if op_type.startswith(("_XlaRun", "_XlaCompile", "XlaLaunch", "_XlaMerge")):
    return "xla cluster"
  return "other"


def op_breakdown(step_stats):
  """{kind: microseconds} summed over the ops of one traced step (all devices; with one inter-op thread the
  sum is close to the step's wall time)."""
  totals = collections.OrderedDict((k, 0) for k in KINDS)
  for device in step_stats.dev_stats:
    if "stream:" in device.device or "/memcpy" in device.device:
      continue  # GPU stream views repeat the ops of the device's own list.
    for node in device.node_stats:
      label = node.timeline_label
      op_type = label.split(" = ", 1)[1].split("(", 1)[0] if " = " in label else node.node_name
      totals[op_kind(node.node_name, op_type)] += node.all_end_rel_micros
  return totals


def format_breakdown(totals):
  """One line: each kind's share of the traced op time, in percent, then the total in ms."""
  total = float(sum(totals.values())) or 1.0
  parts = ["%s %.1f %%" % (k, 100.0 * v / total) for k, v in totals.items()]
  return "op time by kind (one traced step, %.0f ms of ops): %s" % (total / 1000.0, ", ".join(parts))


def train_step_graph(config, batch_size, image_size, num_classes, dtype, optimizer, gelu, forward_only,
                     kernel_set=None):
  """The trainer's training step (launch.train_graph.build_training from a launch.plan.synthetic_plan: forward,
  loss, gradients, clipping, update; loss scaling as the trainer picks it) on fixed random data held in variables,
  so no input pipeline is in the timing. Returns the op to run once per step."""

  def model_fn(pixels, is_training, rng_seed=None):
    return model.vit(scale_input(pixels, dtype), config, num_classes, is_training, compute_dtype=dtype, gelu=gelu,
                     kernels=kernel_set)

  rs = np.random.RandomState(0)
  images = rs.randint(0, 256, (batch_size, image_size, image_size, 3)).astype(np.uint8)
  if forward_only:
    return model_fn(tf.constant(images), False).op
  plan = plan_lib.synthetic_plan(config, image_size, num_classes, batch_size, optimizer=optimizer,
                                 lr=1e-4 if optimizer == "adam" else 1e-3, compute_dtype=dtype,
                                 loss_scale="dynamic" if dtype == tf.float16 else "off", in_graph_loop=False)
  train_graph.create_model_variables(plan, model_fn)
  batches = train_graph.constant_batches(images, rs.randint(0, num_classes, batch_size).astype(np.int32))
  return train_graph.build_training(plan, batches, model_fn=model_fn).loop.fetches["update"]


def main(argv):
  if len(argv) > 1:
    raise UsageError("unexpected arguments %s" % " ".join(argv[1:]))
  for name in ("image_size", "batch_size", "num_classes", "steps"):
    if FLAGS[name].value < 1:
      raise UsageError("--%s=%d: must be at least 1" % (name, FLAGS[name].value))
  config = configs.get_config(FLAGS.model, **{k: FLAGS[k].value for k in configs.CONFIG_FIELDS})
  dtype = tf.as_dtype(FLAGS.dtype)
  sess_config = cpu_config.fast_cpu_config(FLAGS.intra_op_threads or None, FLAGS.inter_op_threads or None,
                                           xla=FLAGS.xla, xla_fusible_only=FLAGS.xla_fusible,
                                           fast_mkl_on_amd=FLAGS.fast_mkl_on_amd)
  lean = device_lib.lean_backward_parts(FLAGS.lean_backward, dtype)
  kernel_set = kernels.for_backend(device_lib.resolve_kernels("cpu",
                                                              FLAGS.kernels), one_pass_layer_norm=FLAGS.ln_one_pass,
                                   softmax_in_float32=FLAGS.softmax_f32, lean_backward=lean)
  probe = MatmulProbe(cpu_config.fast_cpu_config(FLAGS.intra_op_threads or None, fast_mkl_on_amd=FLAGS.fast_mkl_on_amd),
                      dtype, FLAGS.matmul_size) if FLAGS.matmul_size else None
  step_times, peaks = [], []
  with tf.Graph().as_default():
    step = train_step_graph(config, FLAGS.batch_size, FLAGS.image_size, FLAGS.num_classes, dtype, FLAGS.optimizer,
                            FLAGS.gelu, FLAGS.forward_only, kernel_set)
    with tf.Session(config=sess_config) as sess:
      sess.run(tf.global_variables_initializer())
      for _ in range(FLAGS.warmup):
        sess.run(step)
      for _ in range(FLAGS.steps):
        step_times.append(bench_common.seconds(lambda: sess.run(step)))
        if probe:
          peaks.append(probe.gflops())
      # Peak memory of the timed steps, before the traced step (tracing keeps its own buffers).
      peak_mb = bench_common.peak_rss_mb()
      metadata = None
      if FLAGS.trace or FLAGS.breakdown:
        options = tf.RunOptions(trace_level=tf.RunOptions.FULL_TRACE)
        metadata = tf.RunMetadata()
        sess.run(step, options=options, run_metadata=metadata)
      if FLAGS.trace:
        from tensorflow.python.client import timeline  # pylint: disable=g-import-not-at-top
        with open(FLAGS.trace, "w") as f:
          f.write(timeline.Timeline(metadata.step_stats).generate_chrome_trace_format())
  flops = model.forward_flops(config, FLAGS.image_size, FLAGS.num_classes) * (1 if FLAGS.forward_only else 3)
  median, best = float(np.median(step_times)), min(step_times)
  achieved = flops * FLAGS.batch_size / median / 1e9
  levers = "%s%s kernels=%s%s%s%s%s" % (
      " xla" if FLAGS.xla else "", "(fusible)" if FLAGS.xla and FLAGS.xla_fusible else "", kernel_set.name, " lean=%s" %
      (",".join(lean) or "none"), "" if FLAGS.ln_one_pass else " ln_two_pass", "" if FLAGS.softmax_f32 else
      " softmax_in_compute_dtype", " MKL_DEBUG_CPU_TYPE=%s" % os.environ.get("MKL_DEBUG_CPU_TYPE", "unset"))
  line = ("%s @%d batch %d %s %s%s: %.3f s/step median (best %.3f), %.2f img/s (best %.2f), %.1f GFLOP/s "
          "(%.1f GFLOP/img)" %
          (config.name + (" conv-stem" if config.stem == "conv" else ""), FLAGS.image_size, FLAGS.batch_size,
           FLAGS.dtype, "forward" if FLAGS.forward_only else FLAGS.optimizer, levers, median, best,
           FLAGS.batch_size / median, FLAGS.batch_size / best, achieved, flops / 1e9))
  if probe:
    # Step i is compared with the matmul timed right after it, then the median of those ratios is reported.
    ratios = [flops * FLAGS.batch_size / t / 1e9 / p for t, p in zip(step_times, peaks)]
    line += ", %d^2 %s matmul %.1f GFLOP/s (interleaved), ratio %.2f" % (
        FLAGS.matmul_size, FLAGS.dtype, float(np.median(peaks)), float(np.median(ratios)))
  line += ", peak RSS %.0f MB" % peak_mb
  print("TF %s | %s" % (tf.__version__, line))
  if FLAGS.breakdown:
    print(format_breakdown(op_breakdown(metadata.step_stats)))
  sys.stdout.flush()


if __name__ == "__main__":
  tf.logging.set_verbosity(tf.logging.ERROR)  # before disable_v2_behavior, which warns about resource variables
  tf.disable_v2_behavior()
  command.run_command(main)
