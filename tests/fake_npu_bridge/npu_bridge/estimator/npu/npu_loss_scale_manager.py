"""Stand-in (not Ascend's code): loss-scale managers that remember their arguments and follow the documented update
rule of the real ones in plain Python, so tests can check what the trainer's arguments mean."""
import tensorflow.compat.v1 as tf

import npu_bridge


class ExponentialUpdateLossScaleManager(object):

  def __init__(self, init_loss_scale, incr_every_n_steps, decr_every_n_nan_or_inf=2, incr_ratio=2, decr_ratio=0.8):
    self.arguments = dict(init_loss_scale=init_loss_scale, incr_every_n_steps=incr_every_n_steps,
                          decr_every_n_nan_or_inf=decr_every_n_nan_or_inf, incr_ratio=incr_ratio, decr_ratio=decr_ratio)
    npu_bridge.record("ExponentialUpdateLossScaleManager", **self.arguments)

    self.scale = float(init_loss_scale)
    self._good = self._bad = 0

  def get_loss_scale(self):
    return tf.constant(float(self.arguments["init_loss_scale"]))

  def update_loss_scale(self, finite):
    """The real manager's rule (as tf.contrib.mixed_precision's, which npu_bridge follows): after
    incr_every_n_steps finite steps in a row the scale is multiplied by incr_ratio; after decr_every_n_nan_or_inf
    non-finite steps (counted since the last change) by decr_ratio, never below 1; a change clears both counts.
    Returns the new scale."""
    a = self.arguments
    if finite:
      self._good += 1
      if self._good >= a["incr_every_n_steps"]:
        self.scale, self._good, self._bad = self.scale * a["incr_ratio"], 0, 0
    else:
      self._good = 0
      self._bad += 1
      if self._bad >= a["decr_every_n_nan_or_inf"]:
        self.scale, self._good, self._bad = max(1.0, self.scale * a["decr_ratio"]), 0, 0
    return self.scale


class FixedLossScaleManager(object):

  def __init__(self, loss_scale):
    self.arguments = dict(loss_scale=loss_scale)
    npu_bridge.record("FixedLossScaleManager", **self.arguments)

  def get_loss_scale(self):
    return tf.constant(float(self.arguments["loss_scale"]))
