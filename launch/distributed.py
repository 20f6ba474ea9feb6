"""Data-parallel readiness: which shard of the data this process reads, and the optimizer wrapper for many ranks.

Ranks come from --rank/--num_ranks or, as on Ascend, from the RANK_ID / RANK_SIZE environment variables
(Horovod users set them from hvd.rank()/hvd.size()). Each rank's InputPipeline reads its own shard
(rank, num_ranks); the gradient all-reduce is an optimizer wrapper applied to the factory's optimizer:
NPUDistributedOptimizer on the NPU (launch.npu), hvd.DistributedOptimizer with Horovod. The training loop itself
calls only compute/apply_gradients, so it does not change.
"""
import os


def rank_and_size(rank=None, num_ranks=None):
  """(rank, num_ranks) from the flags, else from RANK_ID / RANK_SIZE, else (0, 1)."""
  size = num_ranks if num_ranks is not None else int(os.environ.get("RANK_SIZE", "1") or 1)
  index = rank if rank is not None else int(os.environ.get("RANK_ID", "0") or 0)
  if not 0 <= index < size:
    raise ValueError("rank %d is outside [0, %d): check --rank/--num_ranks or RANK_ID/RANK_SIZE" % (index, size))
  return index, size


def wrap_optimizer(optimizer, device, num_ranks):
  """The gradient all-reduce wrapper for `num_ranks` > 1 (NPU: NPUDistributedOptimizer; elsewhere Horovod)."""
  if num_ranks <= 1:
    return optimizer
  if device == "npu":
    from launch import npu  # pylint: disable=g-import-not-at-top
    return npu.distributed_optimizer(optimizer)
  try:
    import horovod.tensorflow as hvd  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ValueError("%d ranks on %s need Horovod (pip install horovod) for the gradient all-reduce" %
                     (num_ranks, device))
  return hvd.DistributedOptimizer(optimizer)
