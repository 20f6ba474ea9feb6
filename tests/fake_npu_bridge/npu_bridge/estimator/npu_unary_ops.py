"""Stand-in (not Ascend's code) for npu_bridge.estimator.npu_unary_ops.

The real module exposes the adapter's generated ops as the object `npu_unary_ops`; the trainer uses its `gelu`
(the tanh form, with its own GeluGrad on the device). Here `gelu` records the call and computes the tanh form with
standard TensorFlow ops, so the gradient is TensorFlow's.
"""
import math

import npu_bridge
import tensorflow.compat.v1 as tf


class _UnaryOps(object):

  def gelu(self, x, name=None):
    npu_bridge.record("npu_unary_ops.gelu", x=x)
    with tf.name_scope(name, "Gelu", [x]):
      inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)
      return 0.5 * x * (1.0 + tf.tanh(inner))


npu_unary_ops = _UnaryOps()
