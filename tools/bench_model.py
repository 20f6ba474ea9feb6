"""Times full ViT training steps (forward, backward, optimizer) in graph mode and compares them to a large matmul.

  python -m tools.bench_model --model ViT-B/16 --image_size 224 --batch_size 8 [--dtype bfloat16] [--steps 10]

Prints img/s, achieved GFLOP/s (matmul FLOPs counted analytically, 2 per multiply-add, training = 3x forward)
and the ratio to a square matmul of the same dtype measured in the same process, so the ratio stays meaningful
on a busy machine.
"""
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402

from vit_raw import configs  # noqa: E402
from vit_raw import model  # noqa: E402
from vit_raw import session_config  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "ViT-B/16", "Model variant, e.g. ViT-B/16, ViT-Ti/16.")
flags.DEFINE_integer("image_size", 224, "Square input image side in pixels.")
flags.DEFINE_integer("batch_size", 8, "Images per training step.")
flags.DEFINE_integer("num_classes", 1000, "Classes of the head.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16", "float16"], "Compute dtype (variables stay float32).")
flags.DEFINE_enum("optimizer", "adam", ["adam", "sgd", "momentum"], "Optimizer of the timed step.")
flags.DEFINE_integer("steps", 10, "Timed training steps.")
flags.DEFINE_integer("warmup", 3, "Untimed steps first (graph optimisation, allocator warm-up).")
flags.DEFINE_bool("xla", False, "XLA JIT for the whole graph (global_jit_level ON_1).")
flags.DEFINE_integer("intra_op_threads", 0, "Threads per op; 0 = all cores.")
flags.DEFINE_integer("inter_op_threads", 0, "Concurrent ops; 0 = the fast_cpu_config default (1).")
flags.DEFINE_enum("gelu", "tanh", ["tanh", "exact"], "GELU form.")
flags.DEFINE_integer("matmul_size", 2048, "Side of the reference square matmul; 0 skips it.")
flags.DEFINE_string("trace", "", "If set, write a Chrome trace (timeline JSON) of one step to this path.")
flags.DEFINE_bool("forward_only", False, "Time the forward pass only (inference).")


def _timed(sess, fetch, steps, warmup):
  for _ in range(warmup):
    sess.run(fetch)
  start = time.time()
  for _ in range(steps):
    sess.run(fetch)
  return (time.time() - start) / steps


def matmul_gflops(config, dtype, size, steps=10):
  """GFLOP/s of one size x size matmul in `dtype` run through a session with `config`."""
  with tf.Graph().as_default():
    a = tf.Variable(tf.random_normal([size, size]), trainable=False)
    b = tf.Variable(tf.random_normal([size, size]), trainable=False)
    # Cast once into variables so the timed op is the matmul alone.
    ac = tf.Variable(tf.zeros([size, size], dtype), trainable=False)
    bc = tf.Variable(tf.zeros([size, size], dtype), trainable=False)
    init = [tf.assign(ac, tf.cast(a, dtype)), tf.assign(bc, tf.cast(b, dtype))]
    product = tf.matmul(ac, bc)
    with tf.Session(config=config) as sess:
      sess.run(tf.global_variables_initializer())
      sess.run(init)
      seconds = _timed(sess, product.op, steps, 2)
  return 2.0 * size ** 3 / seconds / 1e9


def train_step_graph(config, batch_size, image_size, num_classes, dtype, optimizer, gelu, forward_only):
  """Builds a training step on fixed random data held in variables (no input pipeline in the timing)."""
  images = tf.Variable(tf.random_uniform([batch_size, image_size, image_size, 3], -1.0, 1.0), trainable=False)
  labels = tf.Variable(tf.random_uniform([batch_size], 0, num_classes, tf.int32), trainable=False)
  logits = model.vit(images, config, num_classes, is_training=not forward_only, compute_dtype=dtype, gelu=gelu)
  if forward_only:
    return logits.op
  loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
  opt = {"adam": lambda: tf.train.AdamOptimizer(1e-4),
         "sgd": lambda: tf.train.GradientDescentOptimizer(1e-3),
         "momentum": lambda: tf.train.MomentumOptimizer(1e-3, 0.9)}[optimizer]()
  step = opt.minimize(loss, global_step=tf.train.get_or_create_global_step())
  return step


def main(argv):
  del argv
  config = configs.get_config(FLAGS.model)
  dtype = tf.as_dtype(FLAGS.dtype)
  sess_config = session_config.fast_cpu_config(FLAGS.intra_op_threads or None, FLAGS.inter_op_threads or None,
                                               xla=FLAGS.xla)
  with tf.Graph().as_default():
    step = train_step_graph(config, FLAGS.batch_size, FLAGS.image_size, FLAGS.num_classes, dtype,
                            FLAGS.optimizer, FLAGS.gelu, FLAGS.forward_only)
    with tf.Session(config=sess_config) as sess:
      sess.run(tf.global_variables_initializer())
      seconds = _timed(sess, step, FLAGS.steps, FLAGS.warmup)
      if FLAGS.trace:
        from tensorflow.python.client import timeline  # pylint: disable=g-import-not-at-top
        options = tf.RunOptions(trace_level=tf.RunOptions.FULL_TRACE)
        metadata = tf.RunMetadata()
        sess.run(step, options=options, run_metadata=metadata)
        with open(FLAGS.trace, "w") as f:
          f.write(timeline.Timeline(metadata.step_stats).generate_chrome_trace_format())
  images_per_second = FLAGS.batch_size / seconds
  flops = model.forward_flops(config, FLAGS.image_size, FLAGS.num_classes) * (1 if FLAGS.forward_only else 3)
  achieved = flops * images_per_second / 1e9
  line = ("%s @%d batch %d %s %s%s: %.3f s/step, %.2f img/s, %.1f GFLOP/s (%.1f GFLOP/img)"
          % (config.name, FLAGS.image_size, FLAGS.batch_size, FLAGS.dtype,
             "forward" if FLAGS.forward_only else FLAGS.optimizer, " xla" if FLAGS.xla else "",
             seconds, images_per_second, achieved, flops / 1e9))
  if FLAGS.matmul_size:
    peak = matmul_gflops(sess_config, dtype, FLAGS.matmul_size)
    line += ", %d^2 %s matmul %.1f GFLOP/s, ratio %.2f" % (FLAGS.matmul_size, FLAGS.dtype, peak, achieved / peak)
  print("TF %s | %s" % (tf.__version__, line))
  sys.stdout.flush()


if __name__ == "__main__":
  tf.logging.set_verbosity(tf.logging.ERROR)  # before disable_v2_behavior, which warns about resource variables
  tf.disable_v2_behavior()
  app.run(main)
