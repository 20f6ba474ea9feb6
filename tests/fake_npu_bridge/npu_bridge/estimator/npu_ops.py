"""Stand-in (not Ascend's code) for npu_bridge.estimator.npu_ops: `dropout(x, keep_prob, ...)` records the call and
drops with tf.nn.dropout (on the device it is DropOutGenMask + DropOutDoMask)."""
import npu_bridge
import tensorflow.compat.v1 as tf


def dropout(x, keep_prob, noise_shape=None, seed=None, name=None):
  npu_bridge.record("npu_ops.dropout", x=x, keep_prob=keep_prob)
  return tf.nn.dropout(x, rate=1.0 - keep_prob, noise_shape=noise_shape, seed=seed, name=name)
