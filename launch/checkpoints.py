"""The run's checkpoints: every global variable (model, optimizer slots, global step, loss scale, best accuracy)."""
import os

from absl import logging
import tensorflow.compat.v1 as tf


class Checkpoints(object):
  """A tf.train.Saver writing <model_dir>/model.ckpt-<step>, keeping the last `keep`.

  Attributes:
    last_saved_step, last_saved_path: the step and prefix of the last checkpoint written (or restored) by this
      object (None before the first).
  """

  def __init__(self, model_dir, keep):
    self.prefix = os.path.join(model_dir, "model.ckpt")
    self.saver = tf.train.Saver(tf.global_variables(), max_to_keep=keep)
    self.last_saved_step = self.last_saved_path = None

  def save(self, sess, step):
    """Writes a checkpoint of `step` (once per step); returns its path, or None when it was already written."""
    if step == self.last_saved_step:
      return None
    path = self.saver.save(sess, self.prefix, global_step=step)
    self.last_saved_step, self.last_saved_path = step, path
    logging.info("checkpoint: %s", path)
    return path

  def restore(self, sess, path):
    self.saver.restore(sess, path)
    self.last_saved_step, self.last_saved_path = step_of_checkpoint(path), path


def step_of_checkpoint(path):
  """The global step stored in a checkpoint of ours (0 when there is none)."""
  if not path:
    return 0
  return int(tf.train.load_variable(path, "global_step"))
