"""Stand-in (not Ascend's code) for npu_bridge.hccl.hccl_ops: the signatures of allreduce and broadcast as Ascend's
ModelZoo scripts call them (allreduce(tensor, "sum"); broadcast(tensor=[...], root_rank=0) returning a list).

It records each call. One process cannot reduce over ranks it does not have, so it answers as if every one of the
RANK_SIZE ranks held this process's values: a broadcast returns its input and a "sum" is the input times RANK_SIZE
(an average is then the local value). Tests use it to check which collectives the trainer builds, not what
Ascend's HCCL computes.
"""
import os

import tensorflow.compat.v1 as tf

import npu_bridge


def allreduce(tensor, reduction, fusion=1, fusion_id=-1, group="hccl_world_group"):
  npu_bridge.record("hccl_ops.allreduce", tensor=tensor, reduction=reduction, fusion=fusion, fusion_id=fusion_id,
                    group=group)
  if reduction != "sum":
    raise ValueError("the stand-in only sums")
  return tensor * tf.cast(int(os.environ.get("RANK_SIZE", "1")), tensor.dtype)


def broadcast(tensor, root_rank, fusion=2, fusion_id=0, group="hccl_world_group"):
  npu_bridge.record("hccl_ops.broadcast", tensor=list(tensor), root_rank=root_rank, fusion=fusion, fusion_id=fusion_id,
                    group=group)
  return [tf.identity(t) for t in tensor]
