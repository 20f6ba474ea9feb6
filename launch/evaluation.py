"""Evaluation over a whole split: top-1 and top-5 counts summed in the graph, padded rows masked out."""
import collections

import tensorflow.compat.v1 as tf

EvalGraph = collections.namedtuple("EvalGraph", ["iterator", "counts", "steps"])
EvalGraph.__doc__ = """The evaluation graph.

Attributes:
  iterator: initializable iterator over one pass of the eval pipeline (re-initialised before each evaluation).
  counts: float32 [3] tensor per batch: (top-1 correct, top-5 correct, real examples) over the unmasked rows.
  steps: batches in one pass.
"""


def build_eval(pipeline, logits_fn):
  """Builds the eval graph on `pipeline` (an InputPipeline with training=False); logits_fn(images uint8)->logits."""
  iterator = tf.data.make_initializable_iterator(pipeline.tf_dataset())
  images, labels, mask = iterator.get_next()
  logits = tf.cast(logits_fn(images), tf.float32)
  k = min(5, int(logits.shape[-1]))
  top1 = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32)
  top5 = tf.cast(tf.nn.in_top_k(logits, labels, k), tf.float32)
  counts = tf.stack([tf.reduce_sum(top1 * mask), tf.reduce_sum(top5 * mask), tf.reduce_sum(mask)])
  return EvalGraph(iterator, counts, pipeline.steps_per_epoch)


def evaluate(sess, graph):
  """Runs one full pass; returns dict(top1, top5, examples). Every real example counts exactly once.

  With no example to evaluate (every file of the split was skipped) top1 and top5 are NaN, not 0: there is no
  accuracy to report.
  """
  sess.run(graph.iterator.initializer)
  total = [0.0, 0.0, 0.0]
  while True:
    try:
      counts = sess.run(graph.counts)
    except tf.errors.OutOfRangeError:
      break
    total = [a + b for a, b in zip(total, counts)]
  examples = int(round(total[2]))
  if not examples:
    return {"top1": float("nan"), "top5": float("nan"), "examples": 0}
  return {"top1": total[0] / total[2], "top5": total[1] / total[2], "examples": examples}
