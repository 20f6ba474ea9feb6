"""A STAND-IN for Huawei's npu_bridge, for tests only. It is not Ascend's code and does nothing on any device.

It has the module layout and the call signatures launch/npu.py uses, records every call in CALLS as
(name, arguments dict), and behaves as a pass-through (the loss-scale and distributed optimizers delegate to the
wrapped optimizer), so the trainer's NPU wiring can be checked on a machine without an Ascend NPU.
"""
CALLS = []


def record(name, **arguments):
  CALLS.append((name, arguments))
