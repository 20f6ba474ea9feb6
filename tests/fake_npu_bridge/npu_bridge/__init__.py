"""A STAND-IN for Huawei's npu_bridge, for tests only. It is not Ascend's code and does nothing on any device.

It has the module layout and the call signatures launch/npu.py uses, records every call in CALLS as
(name, arguments dict), and behaves as a pass-through (the loss-scale optimizer delegates to the wrapped optimizer;
hccl_ops returns its inputs), so the trainer's NPU wiring can be checked on a machine without an Ascend NPU. Where
the real classes decide something themselves the stand-in decides it the same way: NPUDistributedOptimizer reads
RANK_SIZE and skips the all-reduce when it is unset or 1.
"""
CALLS = []


def record(name, **arguments):
  CALLS.append((name, arguments))
