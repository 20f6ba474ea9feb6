#!/usr/bin/env bash
# Full ViT fine-tuning on 8 devices (Ascend ModelZoo convention): RANK_SIZE processes (default 8) of one
# data-parallel run, each with RANK_ID, DEVICE_INDEX, ASCEND_DEVICE_ID and RANK_TABLE_FILE (default configs/8p.json).
# Prints "Final Performance images/sec" (all devices together), "Final Train Accuracy", "E2E Training Duration sec",
# and writes output/${ASCEND_DEVICE_ID}/train_${ASCEND_DEVICE_ID}.log per device and output/0/<CaseName>.log with
# RankSize = 8 and CaseName = <Network>_bs<per-device batch>_8p_acc. Flags: see run_1p.sh and run_8p.sh; --batch_size
# is per device (default 64, global 512). On a machine without an NPU it runs RANK_SIZE CPU processes.
# Example: RANK_TABLE_FILE=/path/rank_table_8p.json launch/train_full_8p.sh --data_path=/data/cifar-100-python \
#   --ckpt_path=/ckpt/ViT-B_16.npz
exec "$(dirname "${BASH_SOURCE[0]}")/run_8p.sh" full "$@"
