"""Evaluation over a whole split: top-1 and top-5 counts summed in the graph, padded rows masked out."""
import collections

from absl import logging
import tensorflow.compat.v1 as tf

EvalGraph = collections.namedtuple("EvalGraph", ["iterator", "counts", "totals", "reduced"])
EvalGraph.__doc__ = """The evaluation graph.

Attributes:
  iterator: initializable iterator over one pass of the eval pipeline (re-initialised before each evaluation).
  counts: float32 [3] tensor per batch: (top-1 correct, top-5 correct, real examples) over the unmasked rows.
  totals, reduced: a float64 [3] placeholder for this rank's sums over its shard, and those sums summed over every
    rank (the same tensor with one rank), so every rank reports the exact top-1 of the whole split.
"""


def build_eval(pipeline, logits_fn, sum_over_ranks=None):
  """Builds the eval graph on `pipeline` (an InputPipeline with training=False); logits_fn(images uint8)->logits;
  sum_over_ranks(tensor) sums a tensor over the data-parallel ranks (None: one process)."""
  iterator = tf.data.make_initializable_iterator(pipeline.tf_dataset())
  images, labels, mask = iterator.get_next()
  logits = tf.cast(logits_fn(images), tf.float32)
  k = min(5, int(logits.shape[-1]))
  top1 = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32)
  top5 = tf.cast(tf.nn.in_top_k(logits, labels, k), tf.float32)
  counts = tf.stack([tf.reduce_sum(top1 * mask), tf.reduce_sum(top5 * mask), tf.reduce_sum(mask)])
  totals = tf.placeholder(tf.float64, [3], name="eval_totals")
  reduced = sum_over_ranks(totals) if sum_over_ranks is not None else tf.identity(totals)
  return EvalGraph(iterator, counts, totals, reduced)


def evaluate(sess, graph):
  """Runs one full pass over this rank's shard and sums the counts over the ranks; returns dict(top1, top5,
  examples). Every real example counts exactly once; with no example evaluated (every file of the split
  unreadable) top1 and top5 are NaN, never 0."""
  sess.run(graph.iterator.initializer)
  total = [0.0, 0.0, 0.0]
  while True:
    try:
      counts = sess.run(graph.counts)
    except tf.errors.OutOfRangeError:
      break
    total = [a + b for a, b in zip(total, counts)]
  total = list(sess.run(graph.reduced, {graph.totals: total}))
  examples = int(round(total[2]))
  if not examples:
    logging.warning("eval: no examples evaluated (every example of the split was skipped); top-1 is undefined")
    return {"top1": float("nan"), "top5": float("nan"), "examples": 0}
  return {"top1": total[0] / total[2], "top5": total[1] / total[2], "examples": examples}
