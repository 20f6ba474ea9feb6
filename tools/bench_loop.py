"""python -m tools.bench_loop: steps/s of the training op at iterations_per_loop N=1 and N=100 (and the ratio).

A tiny ViT on 8x8 images from an in-memory tf.data stream, so the step itself takes well under a millisecond of
compute and what is measured is the per-sess.run overhead (Python, session, feed/fetch, host round trip) that the
in-graph tf.while_loop removes. Warm-up runs first; each N is timed over the same number of steps.
  --steps 2000 --loops 1,100 --hidden 16 --batch 8 --repeats 3
"""
import argparse
import time

import numpy as np
import tensorflow.compat.v1 as tf

from launch import device as device_lib
from launch import plan as plan_lib
from launch import train_graph
from vit_raw.configs import get_config


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
        start = time.time()
        for _ in range(runs):
          sess.run(loop.fetches)
        best = max(best, runs * n / (time.time() - start))
  return best


def main():
  parser = argparse.ArgumentParser(prog="python -m tools.bench_loop", description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=2000)
  parser.add_argument("--loops", default="1,100", help="comma-separated iterations_per_loop values")
  parser.add_argument("--hidden", type=int, default=16)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=3, help="timed repeats per N; the best is reported")
  args = parser.parse_args()
  tf.disable_v2_behavior()
  values = [int(v) for v in args.loops.split(",")]
  results = {}
  with tf.Graph().as_default():
    plan = build(1, args.hidden, args.batch)[2]
  print("timed: the trainer's loop (launch.train_graph.build_training), ViT 1 block, width %d, 8x8 images in 4x4 "
        "patches, batch %d, kernels %s, lean backward %s; TF %s" %
        (args.hidden, args.batch, plan.model.kernels, ",".join(plan.model.lean_backward) or "none", tf.__version__))
  for n in values:
    results[n] = steps_per_second(n, args.steps, args.hidden, args.batch, args.repeats)
    print("iterations_per_loop=%-4d %8.1f steps/s  (%.3f ms/step)" % (n, results[n], 1000.0 / results[n]))
  if len(values) >= 2:
    print("ratio N=%d / N=%d: %.2fx" % (values[-1], values[0], results[values[-1]] / results[values[0]]))


if __name__ == "__main__":
  main()
