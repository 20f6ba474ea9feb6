"""Inference speed of one model through each runtime, side by side in one run.

  python -m tools.bench_infer --model ViT-B/16 --image_size 224          (random weights)
  python -m tools.bench_infer --model_dir runs/default                    (a trained run)

Runtimes: the checkpoint in a TF session, the frozen .pb (tools/inference_graph.py: grappler-cleaned, constants
folded) in a TF session, and ONNX Runtime (CPU provider) on the tf2onnx conversion of the same frozen graph. For each
runtime and precision (float32, and bfloat16 in TF; ONNX Runtime's CPU provider has no bfloat16 kernels): batch-1
latency (p50 and p99 over --latency_runs calls) and batch --throughput_batch throughput (images / median call time).
Warm-up calls are not timed. Prints a Markdown table.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402
import numpy as np  # noqa: E402

from tools import bench_common  # noqa: E402
from tools import command  # noqa: E402
from tools import model_source  # noqa: E402
from tools.command import UsageError  # noqa: E402

RUNTIMES = ("session", "pb", "onnx")

FLAGS = flags.FLAGS
model_source.define_flags()
flags.adopt_module_key_flags(model_source)
flags.DEFINE_list(
    "runtimes", list(RUNTIMES), "Runtimes to time: session (checkpoint in a TF session), pb (frozen "
    "graph in a TF session), onnx (ONNX Runtime).")
flags.DEFINE_list("precisions", ["float32", "bfloat16"], "Compute dtypes: float32, bfloat16, float16 "
                  "(ONNX Runtime: float32 only).")
flags.DEFINE_integer("latency_runs", 20, "Timed batch-1 calls per row (p99 needs many; 20 makes it the slowest).")
flags.DEFINE_integer("throughput_batch", 32, "Batch size of the throughput measurement.")
flags.DEFINE_integer("throughput_runs", 3, "Timed calls at --throughput_batch per row.")
flags.DEFINE_integer("warmup", 2, "Untimed calls before timing (graph optimisation, allocator warm-up).")
flags.DEFINE_integer("num_classes_random", 1000, "Classes of the head when no checkpoint is given (random weights).")


def random_source(model_name, image_size, num_classes, shape=None, seed=0):
  """A ModelSource with random weights (speed does not depend on the values)."""
  from vit_raw import configs  # pylint: disable=g-import-not-at-top
  from vit_raw import model  # pylint: disable=g-import-not-at-top
  config = configs.get_config(model_name, **(shape or {}))
  rng = np.random.RandomState(seed)
  shapes = model.variable_shapes(config, num_classes, image_size)
  values = {name: (rng.standard_normal(s) * 0.02).astype(np.float32) for name, s in shapes.items()}
  return model_source.ModelSource(config, tuple(image_size), num_classes, None, "random weights", None, values,
                                  "random")


def _source():
  if FLAGS.model_dir or FLAGS.checkpoint:
    return model_source.from_flags()
  if not FLAGS.model:
    raise UsageError("give --model_dir, --checkpoint with --model, or --model alone (random weights)")
  size = model_source.parse_size(FLAGS.image_size or "224")
  shape = {name: FLAGS[name].value for name in ("patch_size", "hidden_size", "num_layers", "num_heads", "mlp_dim")}
  return random_source(FLAGS.model, size, FLAGS.num_classes or FLAGS.num_classes_random, shape)


def runner_for(runtime, source, precision):
  """(runner, None) or (None, why this combination is not run)."""
  from tools import exporters  # pylint: disable=g-import-not-at-top
  from tools import inference_graph  # pylint: disable=g-import-not-at-top
  from tools import runtimes  # pylint: disable=g-import-not-at-top
  if runtime == "session":
    return runtimes.session_runner(source, precision), None
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  if runtime == "onnx" and precision != "float32":
    return None, "ONNX Runtime's CPU provider has no %s kernels" % precision
  graph = tf.Graph()
  with graph.as_default():
    inference_graph.build(source, precision=precision)
  with inference_graph.session(graph) as sess:
    inference_graph.load_weights(sess, source.values)
    graph_def = inference_graph.freeze(sess)
  if runtime == "pb":
    return runtimes.graph_def_runner(graph_def, "frozen pb (%s)" % precision), None
  try:
    model_bytes = exporters.onnx_model(graph_def).SerializeToString()
  except UsageError as e:
    return None, str(e)
  return runtimes.OnnxRunner(model_bytes), None


def measure(runner, image_size, latency_runs, batch, throughput_runs, warmup):
  """(p50 ms, p99 ms) of batch-1 calls and img/s of batch-`batch` calls (median call)."""
  rng = np.random.RandomState(0)
  one = rng.randint(0, 256, [1, image_size[0], image_size[1], 3]).astype(np.uint8)
  many = rng.randint(0, 256, [batch, image_size[0], image_size[1], 3]).astype(np.uint8)
  times = bench_common.seconds_each(lambda: runner.logits(one), latency_runs, warmup)
  # The first call at a new batch size builds new kernels: one untimed call.
  big = bench_common.seconds_each(lambda: runner.logits(many, chunk=batch), throughput_runs, warmup=1)
  return (1e3 * float(np.percentile(times, 50)), 1e3 * float(np.percentile(times, 99)), batch / float(np.median(big)))


def run(argv):
  if len(argv) > 1:
    raise UsageError("unexpected arguments %s" % " ".join(argv[1:]))
  unknown = sorted(set(FLAGS.runtimes) - set(RUNTIMES))
  if unknown:
    raise UsageError("--runtimes: unknown %s; expected some of %s" % (", ".join(unknown), ", ".join(RUNTIMES)))
  bad = sorted(set(FLAGS.precisions) - {"float32", "bfloat16", "float16"})
  if bad:
    raise UsageError("--precisions: unknown %s; expected float32, bfloat16, float16" % ", ".join(bad))
  source = _source()
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  tf.logging.set_verbosity(tf.logging.ERROR)
  tf.disable_v2_behavior()
  h, w = source.image_size
  print(
      bench_common.timed_line("%s @%dx%d, %d classes, %s; batch-1 latency over %d calls, batch-%d throughput over %d "
                              "calls" % (source.config.name, h, w, source.num_classes, model_source.describe(source),
                                         FLAGS.latency_runs, FLAGS.throughput_batch, FLAGS.throughput_runs)))
  table = bench_common.Table([("runtime", "%s"), ("precision", "%s"), ("batch 1 p50 ms", "%s"),
                              ("batch 1 p99 ms", "%s"), ("batch %d img/s" % FLAGS.throughput_batch, "%s")])
  table.header()
  for runtime in FLAGS.runtimes:
    for precision in FLAGS.precisions:
      runner, why = runner_for(runtime, source, precision)
      if runner is None:
        table.row(runtime, precision, "n/a", "n/a", "n/a (%s)" % why)
        continue
      p50, p99, throughput = measure(runner, source.image_size, FLAGS.latency_runs, FLAGS.throughput_batch,
                                     FLAGS.throughput_runs, FLAGS.warmup)
      label = {"session": "checkpoint in a TF session", "pb": "frozen .pb in a TF session"}.get(runtime, runner.name)
      table.row(label, precision, "%.1f" % p50, "%.1f" % p99, "%.2f" % throughput)
      runner.close()
  print(bench_common.machine_line(("TensorFlow", tf.__version__)))


if __name__ == "__main__":
  command.run_command(run)
