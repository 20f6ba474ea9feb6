"""Stand-in (not Ascend's code): NPUDistributedOptimizer as the real one decides whether to all-reduce.

Like npu_bridge's class, compute_gradients reads the RANK_SIZE environment variable itself: unset or 1, it returns
the wrapped optimizer's gradients untouched (no all-reduce, whatever the trainer was told); otherwise it sums each
gradient with hccl_ops.allreduce and divides by RANK_SIZE (the all-reduce is the stand-in of npu_bridge.hccl.hccl_ops).
"""
import os

import tensorflow.compat.v1 as tf

import npu_bridge
from npu_bridge.hccl import hccl_ops


class NPUDistributedOptimizer(tf.train.Optimizer):

  def __init__(self, optimizer, name=None):
    super(NPUDistributedOptimizer, self).__init__(use_locking=False, name=name or "NPUDistributedOptimizer")
    self._optimizer = optimizer
    npu_bridge.record("NPUDistributedOptimizer", optimizer=optimizer)

  def compute_gradients(self, *args, **kwargs):
    gradients = self._optimizer.compute_gradients(*args, **kwargs)
    rank_size = os.getenv("RANK_SIZE")
    reduced = rank_size is not None and int(rank_size) > 1
    npu_bridge.record("NPUDistributedOptimizer.compute_gradients", rank_size=rank_size, allreduce=reduced)
    if not reduced:
      return gradients
    return [(None if g is None else hccl_ops.allreduce(g, "sum") / float(rank_size), v) for g, v in gradients]

  def apply_gradients(self, *args, **kwargs):
    return self._optimizer.apply_gradients(*args, **kwargs)
