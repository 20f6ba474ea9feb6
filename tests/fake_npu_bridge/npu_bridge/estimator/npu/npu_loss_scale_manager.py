"""Stand-in (not Ascend's code): loss-scale managers that only remember their arguments."""
import tensorflow.compat.v1 as tf

import npu_bridge


class ExponentialUpdateLossScaleManager(object):

  def __init__(self, init_loss_scale, incr_every_n_steps, decr_every_n_nan_or_inf=2, incr_ratio=2, decr_ratio=0.8):
    self.arguments = dict(init_loss_scale=init_loss_scale, incr_every_n_steps=incr_every_n_steps,
                          decr_every_n_nan_or_inf=decr_every_n_nan_or_inf, incr_ratio=incr_ratio, decr_ratio=decr_ratio)
    npu_bridge.record("ExponentialUpdateLossScaleManager", **self.arguments)

  def get_loss_scale(self):
    return tf.constant(float(self.arguments["init_loss_scale"]))


class FixedLossScaleManager(object):

  def __init__(self, loss_scale):
    self.arguments = dict(loss_scale=loss_scale)
    npu_bridge.record("FixedLossScaleManager", **self.arguments)

  def get_loss_scale(self):
    return tf.constant(float(self.arguments["loss_scale"]))
