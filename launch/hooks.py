"""What hangs off the training loop, one small object per concern: throughput/log lines, TensorBoard summaries,
checkpoints, and the log file. The loop calls them in order after each sess.run."""
import logging as py_logging
import os
import time

from absl import logging
import tensorflow.compat.v1 as tf

from launch import log_format


def log_to_file(model_dir, name="train.log"):
  """Sends absl log records to <model_dir>/<name> as well as stderr (same format); returns the handler."""
  if not os.path.isdir(model_dir):
    os.makedirs(model_dir)
  path = os.path.join(model_dir, name)
  handler = py_logging.FileHandler(path)
  handler.setFormatter(logging.PythonFormatter())
  logging.get_absl_logger().addHandler(handler)
  logging.set_verbosity(logging.INFO)
  return handler


class Throughput(object):
  """Times each loop; keeps the mean img/s over loops after the warm-up.

  Attributes:
    warmup_steps: loops that end at or before this step (from the start of this run) are warm-up.
    images: images per step (batch size of this rank).
  """

  def __init__(self, images_per_step, warmup_steps):
    self.images = images_per_step
    self.warmup_steps = warmup_steps
    self._steps_done = 0
    self._timed_steps = 0
    self._timed_seconds = 0.0
    self._recent = []
    self._start = None

  def start(self):
    self._start = time.time()

  def stop(self, steps):
    """Ends the timing of a loop of `steps` steps; returns (img/s, ms per step) of that loop."""
    seconds = max(time.time() - self._start, 1e-9)
    self._steps_done += steps
    if self._steps_done > self.warmup_steps:
      self._timed_steps += steps
      self._timed_seconds += seconds
    self._recent = (self._recent + [seconds / steps])[-20:]
    return steps * self.images / seconds, 1000.0 * seconds / steps

  def mean_ips(self):
    """Mean img/s without warm-up (falls back to the recent loops when the run was all warm-up)."""
    if self._timed_steps:
      return self._timed_steps * self.images / self._timed_seconds
    if self._recent:
      return self.images / (sum(self._recent) / len(self._recent))
    return 0.0

  def eta(self, remaining_steps):
    if not self._recent:
      return 0.0
    return remaining_steps * sorted(self._recent)[len(self._recent) // 2]


class Summaries(object):
  """TensorBoard scalars written from Python values (no summary ops in the graph, so nothing runs inside the loop)."""

  def __init__(self, log_dir, graph=None):
    self.writer = tf.summary.FileWriter(log_dir, graph)

  def scalars(self, step, **values):
    summary = tf.Summary(value=[tf.Summary.Value(tag=k, simple_value=float(v)) for k, v in sorted(values.items())])
    self.writer.add_summary(summary, step)

  def close(self):
    self.writer.flush()
    self.writer.close()


class Checkpoints(object):
  """tf.train.Saver over every global variable (model, optimizer slots, global step, loss scale, best accuracy)."""

  def __init__(self, model_dir, keep):
    self.model_dir = model_dir
    self.prefix = os.path.join(model_dir, "model.ckpt")
    self.saver = tf.train.Saver(tf.global_variables(), max_to_keep=keep)
    self.last_saved_step = None

  def latest(self):
    return tf.train.latest_checkpoint(self.model_dir)

  def save(self, sess, step):
    if step == self.last_saved_step:
      return None
    path = self.saver.save(sess, self.prefix, global_step=step)
    self.last_saved_step = step
    logging.info("checkpoint: %s", path)
    return path

  def restore(self, sess, path):
    self.saver.restore(sess, path)


def step_of_checkpoint(path):
  """The global step stored in a checkpoint of ours (0 when there is none)."""
  if not path:
    return 0
  return int(tf.train.load_variable(path, "global_step"))


def train_line(epoch, step, total, loss, lr, ips, step_ms, scale, skipped, eta_seconds):
  return log_format.TRAIN.format(epoch=epoch, step=step, total=total, loss=loss, lr=lr, ips=ips, step_ms=step_ms,
                                 scale=scale, skipped=skipped, eta=log_format.format_eta(eta_seconds))
