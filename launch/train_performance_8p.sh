#!/usr/bin/env bash
# A short ViT training run on 8 devices for throughput (Ascend ModelZoo convention): 200 steps, no evaluation;
# prints "Final Performance images/sec" (global: all devices' images per second) and "E2E Training Duration sec";
# CaseName <Network>_bs<per-device batch>_8p_perf. Flags and environment: see train_full_8p.sh.
exec "$(dirname "${BASH_SOURCE[0]}")/run_8p.sh" performance "$@"
