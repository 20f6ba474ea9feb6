"""Stand-in (not Ascend's code) for npu_bridge.hccl."""
