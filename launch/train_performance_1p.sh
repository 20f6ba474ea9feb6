#!/usr/bin/env bash
# A short ViT training run on one device for throughput (Ascend ModelZoo convention): 200 steps by default, no
# evaluation; prints "Final Performance images/sec" and "E2E Training Duration sec", writes the same logs as
# train_full_1p.sh with CaseName ..._perf. Flags: see run_1p.sh.
exec "$(dirname "${BASH_SOURCE[0]}")/run_1p.sh" performance "$@"
