#!/usr/bin/env bash
# Full ViT fine-tuning on one device (Ascend ModelZoo convention): trains, evaluates every epoch, prints
# "Final Performance images/sec", "Final Train Accuracy" and "E2E Training Duration sec", and writes
# output/${ASCEND_DEVICE_ID}/train_${ASCEND_DEVICE_ID}.log and output/${ASCEND_DEVICE_ID}/<CaseName>.log.
# Flags: see run_1p.sh. Example: ASCEND_DEVICE_ID=0 launch/train_full_1p.sh --data_path=/data/cifar-100-python \
#   --ckpt_path=/ckpt/ViT-B_16.npz
exec "$(dirname "${BASH_SOURCE[0]}")/run_1p.sh" full "$@"
