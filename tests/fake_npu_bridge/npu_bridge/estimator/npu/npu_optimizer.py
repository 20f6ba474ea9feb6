"""Stand-in (not Ascend's code): a pass-through NPUDistributedOptimizer that records its use."""
import tensorflow.compat.v1 as tf

import npu_bridge


class NPUDistributedOptimizer(tf.train.Optimizer):

  def __init__(self, optimizer, name=None):
    super(NPUDistributedOptimizer, self).__init__(use_locking=False, name=name or "NPUDistributedOptimizer")
    self._optimizer = optimizer
    npu_bridge.record("NPUDistributedOptimizer", optimizer=optimizer)

  def compute_gradients(self, *args, **kwargs):
    npu_bridge.record("NPUDistributedOptimizer.compute_gradients")
    return self._optimizer.compute_gradients(*args, **kwargs)

  def apply_gradients(self, *args, **kwargs):
    return self._optimizer.apply_gradients(*args, **kwargs)
