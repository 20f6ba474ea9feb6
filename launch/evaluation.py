"""Evaluation over a whole split: top-1 and top-5 counts summed in the graph, padded rows masked out."""
import collections

import numpy as np

from absl import logging
import tensorflow.compat.v1 as tf

EvalGraph = collections.namedtuple("EvalGraph", ["iterator", "counts", "totals", "reduced", "views"])
EvalGraph.__doc__ = """The evaluation graph.

Attributes:
  iterator: initializable iterator over one pass of the eval pipeline (re-initialised before each evaluation).
  counts: float32 [1 + 2V] tensor per batch: real examples, then (top-1 correct, top-5 correct) of each of the V
    views, over the unmasked rows.
  totals, reduced: a float64 placeholder for this rank's sums over its shard, and those sums summed over every
    rank (the same tensor with one rank), so every rank reports the exact top-1 of the whole split.
  views: the view names in order ("" for the trained weights, "ema" for their moving average, "hflip" and
    "ema_hflip" for the same weights with flip averaging, ...).
"""


def _flip_averaged(fn, images):
  """(logits of the images, log of the mean softmax of the images and their mirror images): one forward pass over
  the batch and its mirror concatenated, so the model graph is built once."""
  both = tf.cast(fn(tf.concat([images, tf.reverse(images, [2])], 0)), tf.float32)
  plain, mirrored = tf.split(both, 2, 0)
  # In log space: the log of a softmax that underflows to 0 would be -inf, which in_top_k counts as never in the top k.
  log_probs = tf.stack([tf.nn.log_softmax(plain), tf.nn.log_softmax(mirrored)])
  return plain, tf.reduce_logsumexp(log_probs, 0) - np.log(2.0)


def build_eval(pipeline, logits_fns, sum_over_ranks=None, hflip=False):
  """Builds the eval graph on `pipeline` (an InputPipeline with training=False); logits_fns: an OrderedDict view
  name -> fn(images uint8 NHWC) -> logits, all evaluated on the same batches in one pass (or one fn: the view "");
  sum_over_ranks(tensor) sums a tensor over the data-parallel ranks (None: one process). hflip adds, after each
  view V, the view V_hflip ("hflip" for ""): its softmax averaged with that of the mirror image (test-time flip
  augmentation)."""
  if callable(logits_fns):
    logits_fns = collections.OrderedDict([("", logits_fns)])
  iterator = tf.data.make_initializable_iterator(pipeline.tf_dataset())
  images, labels, mask = iterator.get_next()
  counts, views = [tf.reduce_sum(mask)], []

  def count(name, logits):
    k = min(5, int(logits.shape[-1]))
    top1 = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32)
    top5 = tf.cast(tf.nn.in_top_k(logits, labels, k), tf.float32)
    counts.extend([tf.reduce_sum(top1 * mask), tf.reduce_sum(top5 * mask)])
    views.append(name)

  for name, fn in logits_fns.items():
    if hflip:
      plain, averaged = _flip_averaged(fn, images)
      count(name, plain)
      count(name + "_hflip" if name else "hflip", averaged)
    else:
      count(name, tf.cast(fn(images), tf.float32))
  counts = tf.stack(counts)
  totals = tf.placeholder(tf.float64, [int(counts.shape[0])], name="eval_totals")
  reduced = sum_over_ranks(totals) if sum_over_ranks is not None else tf.identity(totals)
  return EvalGraph(iterator, counts, totals, reduced, views)


def evaluate(sess, graph):
  """Runs one full pass over this rank's shard and sums the counts over the ranks; returns dict(top1, top5,
  examples) of the first view, plus <view>_top1 / <view>_top5 of the others. Every real example counts exactly
  once; with no example evaluated (every file of the split unreadable) top1 and top5 are NaN, never 0."""
  sess.run(graph.iterator.initializer)
  total = [0.0] * int(graph.counts.shape[0])
  while True:
    try:
      counts = sess.run(graph.counts)
    except tf.errors.OutOfRangeError:
      break
    total = [a + b for a, b in zip(total, counts)]
  total = list(sess.run(graph.reduced, {graph.totals: total}))
  examples = int(round(total[0]))
  result = {"examples": examples}
  if not examples:
    logging.warning("eval: no examples evaluated (every example of the split was skipped); top-1 is undefined")
  for n, view in enumerate(graph.views):
    prefix = view + "_" if view else ""
    top1, top5 = (total[1 + 2 * n] / total[0], total[2 + 2 * n] / total[0]) if examples else (float("nan"),) * 2
    result[prefix + "top1"], result[prefix + "top5"] = top1, top5
  return result
