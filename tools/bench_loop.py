"""python -m tools.bench_loop: steps/s of the training op at iterations_per_loop N=1 and N=100 (and the ratio).

A tiny ViT on 8x8 images from an in-memory tf.data stream, so the step itself takes well under a millisecond of
compute and what is measured is the per-sess.run overhead (Python, session, feed/fetch, host round trip) that the
in-graph tf.while_loop removes. Warm-up runs first; each N is timed over the same number of steps.

  python -m tools.bench_loop [--steps 2000] [--loops 1,100] [--hidden 16] [--batch 8] [--repeats 3]
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402

from launch import device as device_lib  # noqa: E402
from launch import plan as plan_lib  # noqa: E402
from launch import train_graph  # noqa: E402
from tools import bench_common  # noqa: E402
from tools import command  # noqa: E402
from tools.command import UsageError  # noqa: E402
from vit_raw.configs import get_config  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
  """The command's flags (defined only when it runs as a command: importing it leaves absl's flags alone)."""
  flags.DEFINE_integer("steps", 2000, "Training steps timed per repeat and per N (rounded down to whole loops).")
  flags.DEFINE_list(
      "loops", ["1", "100"], "iterations_per_loop values N to time, comma-separated; the ratio "
      "compares the last with the first.")
  flags.DEFINE_integer("hidden", 16, "Width of the 1-block ViT (its MLP is twice as wide).")
  flags.DEFINE_integer("batch", 8, "Images per training step.")
  flags.DEFINE_integer("repeats", 3, "Timed repeats per N; the best is reported.")


def build(n, hidden, batch, size=8, classes=10):
  """The trainer's N-step loop (launch.train_graph.build_training, the trainer's resolved kernels and lean
  backward for the CPU) on an in-memory tf.data stream; returns (loop, iterator, plan)."""
  tf.set_random_seed(0)
  config = get_config("tiny", hidden_size=hidden, num_layers=1, num_heads=2, mlp_dim=2 * hidden)
  plan = plan_lib.synthetic_plan(config, size, classes, batch, iterations=n)
  rs = np.random.RandomState(0)
  data = tf.data.Dataset.from_tensor_slices((rs.randint(0, 256, (256, size, size, 3)).astype(np.uint8),
                                             rs.randint(0, classes, 256).astype(np.int32), np.ones(256, np.float32)))
  iterator = tf.data.make_initializable_iterator(data.repeat().batch(batch, drop_remainder=True).prefetch(4))
  return train_graph.build_training(plan, train_graph.BatchSource(iterator)).loop, iterator, plan


def steps_per_second(n, steps, hidden, batch, repeats):
  with tf.Graph().as_default():
    loop, iterator, _ = build(n, hidden, batch)
    with tf.Session(config=device_lib.device_config("cpu")) as sess:
      sess.run([tf.global_variables_initializer(), iterator.initializer])
      for _ in range(max(3, 200 // n)):
        sess.run(loop.fetches)
      best = 0.0
      for _ in range(repeats):
        runs = max(1, steps // n)
        best = max(best, runs * n / bench_common.seconds(lambda: sess.run(loop.fetches), runs))
  return best


def run(argv):
  if len(argv) > 1:
    raise UsageError("unexpected arguments %s" % " ".join(argv[1:]))
  try:
    values = [int(v) for v in FLAGS.loops]
  except ValueError:
    raise UsageError("--loops=%s: expected comma-separated whole numbers, e.g. 1,100" % ",".join(FLAGS.loops))
  if not values or min(values) < 1:
    raise UsageError("--loops=%s: every N must be at least 1" % ",".join(FLAGS.loops))
  for name in ("steps", "hidden", "batch", "repeats"):
    if FLAGS[name].value < 1:
      raise UsageError("--%s=%d: must be at least 1" % (name, FLAGS[name].value))
  tf.logging.set_verbosity(tf.logging.ERROR)  # before disable_v2_behavior, which warns about resource variables
  tf.disable_v2_behavior()
  results = {}
  with tf.Graph().as_default():
    plan = build(1, FLAGS.hidden, FLAGS.batch)[2]
  print(
      bench_common.timed_line("the trainer's loop (launch.train_graph.build_training), ViT 1 block, width %d, 8x8 "
                              "images in 4x4 patches, batch %d, %s" %
                              (FLAGS.hidden, FLAGS.batch, bench_common.kernels_text(plan.model))))
  print(bench_common.machine_line(("TensorFlow", tf.__version__)))
  for n in values:
    results[n] = steps_per_second(n, FLAGS.steps, FLAGS.hidden, FLAGS.batch, FLAGS.repeats)
    print("iterations_per_loop=%-4d %8.1f steps/s  (%.3f ms/step)" % (n, results[n], 1000.0 / results[n]))
  if len(values) >= 2:
    print("ratio N=%d / N=%d: %.2fx" % (values[-1], values[0], results[values[-1]] / results[values[0]]))


if __name__ == "__main__":
  define_flags()
  command.run_command(run)
