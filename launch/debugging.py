"""The Ascend debugging flags emulated on CPU/GPU (on the NPU the adapter does them; see launch.npu):

  --profiling       ChromeTrace: a Chrome trace (chrome://tracing, Perfetto) of a few loops after warm-up, from
                    RunMetadata step stats.
  --over_dump       Probe.first_nonfinite: on an overflowing loop, re-runs forward + backward on that loop's last
                    batch and names the first op (in graph order) whose output holds inf/NaN.
  --data_dump_flag  Probe.dump: saves the key tensors (input, labels, logits, loss, gradients, weights) of the loop
                    that ends with step N as .npy files; loops are cut so that step N is the last step of a loop.
Both probes run at the weights after the loop; with --iterations_per_loop 1 they see exactly the step in question.
"""
import json
import os

from absl import logging
import numpy as np
import tensorflow.compat.v1 as tf
from tensorflow.python.client import timeline

from launch import train_graph


class ChromeTrace(object):
  """Traces sess.run calls number first..first+count-1 (counting loops) into <out_dir>/timeline_<step>.json."""

  def __init__(self, out_dir, first, count):
    self.out_dir, self.first, self.count = out_dir, first, count
    self.files = []

  def run_kwargs(self, loop_index):
    """kwargs for sess.run: trace options and a fresh RunMetadata when this loop is traced, else {}."""
    if not self.first <= loop_index < self.first + self.count:
      return {}
    return {"options": tf.RunOptions(trace_level=tf.RunOptions.FULL_TRACE), "run_metadata": tf.RunMetadata()}

  def write(self, run_kwargs, step):
    """Writes the trace of a traced run (no-op for an untraced one); returns the path or None."""
    if "run_metadata" not in run_kwargs:
      return None
    if not os.path.isdir(self.out_dir):
      os.makedirs(self.out_dir)
    path = os.path.join(self.out_dir, "timeline_%d.json" % step)
    with open(path, "w") as f:
      f.write(timeline.Timeline(run_kwargs["run_metadata"].step_stats).generate_chrome_trace_format())
    self.files.append(path)
    logging.info("profiling: Chrome trace of the loop ending at step %d in %s", step, path)
    return path


class Probe(object):
  """A one-step forward + backward on a fed batch, sharing the model's weights, for the overflow and data dumps.

  Attributes:
    images, labels: placeholders of one batch.
    tensors: dict name -> tensor of what a data dump saves.
  """

  def __init__(self, model_fn, num_classes, batch_shapes, label_smoothing=0.0):
    graph = tf.get_default_graph()
    first_op = len(graph.get_operations())
    with tf.name_scope("debug_probe"):
      self.images = tf.placeholder(batch_shapes[2], batch_shapes[0], name="images")
      self.labels = tf.placeholder(batch_shapes[3], batch_shapes[1], name="labels")
      # A fixed seed for the model's stateless random ops (stochastic depth): the probe re-runs one batch.
      logits, reads = train_graph.forward_with_reads(model_fn, self.images, True, rng_seed=tf.zeros([2], tf.int64))
      loss = train_graph.cross_entropy(logits, self.labels, num_classes, label_smoothing)
      grads = tf.gradients(loss, [r for _, r in reads.pairs])
    self._ops = graph.get_operations()[first_op:]
    self.tensors = {"images": self.images, "labels": self.labels, "logits": logits, "loss": loss}
    for (var, read), grad in zip(reads.pairs, grads):
      name = var.op.name.replace("/", "__")
      self.tensors["weight__" + name] = read
      if grad is not None:
        self.tensors["grad__" + name] = grad

  def first_nonfinite(self, sess, images, labels):
    """Returns (op name, op type) of the first op whose float output has inf/NaN on this batch, or None."""
    candidates = []
    for op in self._ops:
      for t in op.outputs:
        if t.dtype.is_floating and t.dtype.base_dtype != tf.resource:
          candidates.append((op, t))
    values = sess.run([t for _, t in candidates], feed_dict={self.images: images, self.labels: labels})
    for (op, _), value in zip(candidates, values):
      if not np.all(np.isfinite(np.asarray(value, dtype=np.float64))):
        return op.name, op.type
    return None

  def report_overflow(self, sess, images, labels, out_dir, step):
    """Finds the first non-finite op and writes/logs it; returns the finding (or None)."""
    found = self.first_nonfinite(sess, images, labels)
    if not os.path.isdir(out_dir):
      os.makedirs(out_dir)
    text = ("first inf/NaN at step %d: op %s (%s)" % (step, found[0], found[1]) if found else
            "overflow at step %d not reproduced on the loop's last batch (use --iterations_per_loop 1)" % step)
    with open(os.path.join(out_dir, "overflow_%d.txt" % step), "w") as f:
      f.write(text + "\n")
    logging.warning("over_dump: %s", text)
    return found

  def dump(self, sess, images, labels, out_dir, step):
    """Saves the probe's tensors on this batch as <out_dir>/step_<step>/<name>.npy; returns that folder."""
    values = sess.run(self.tensors, feed_dict={self.images: images, self.labels: labels})
    folder = os.path.join(out_dir, "step_%d" % step)
    if not os.path.isdir(folder):
      os.makedirs(folder)
    for name, value in values.items():
      np.save(os.path.join(folder, name + ".npy"), np.asarray(value))
    with open(os.path.join(folder, "index.json"), "w") as f:
      json.dump(sorted(values), f, indent=0)
    logging.info("data_dump: %d tensors of step %d in %s", len(values), step, folder)
    return folder
