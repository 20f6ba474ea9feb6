#!/usr/bin/env bash
# Multi-device ViT training in the Ascend ModelZoo convention: one run_1p.sh process per device, all ranks of one
# data-parallel run. train_full_8p.sh and train_performance_8p.sh call this with "full" or "performance" first.
#
#   RANK_SIZE (default 8)      processes = devices = ranks
#   RANK_TABLE_FILE            the HCCL rank table (default configs/8p.json; NPU only)
#   every argument of run_1p.sh; --batch_size is per device (default 64: 8 x 64 = the recipe's global 512)
#
# Per process: RANK_ID = DEVICE_INDEX = ASCEND_DEVICE_ID = r (one server, device r is rank r as in configs/8p.json).
# Without an NPU (npu_bridge does not import) the same script runs RANK_SIZE CPU processes joined by TensorFlow's
# collective ops (a TF_CONFIG each, on free localhost ports). Logs: output/${ASCEND_DEVICE_ID}/train_${ASCEND_DEVICE_ID}.log;
# checkpoints: output/ckpt_${RANK_SIZE}p (rank 0 writes them); rank 0's summary lines are printed at the end.
# When a rank fails the others get 30 s to stop by themselves, then are terminated; the exit code is the failure's.
set -uo pipefail

mode="$1"; shift
case "$mode" in full|performance) ;; *) echo "run_8p.sh: first argument must be full or performance" >&2; exit 2;; esac
launch="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$launch")"
RANK_SIZE="${RANK_SIZE:-8}"
RANK_TABLE_FILE="${RANK_TABLE_FILE:-$repo/configs/8p.json}"
export RANK_SIZE RANK_TABLE_FILE
output_path="./output"
for para in "$@"; do
  case "$para" in --output_path=*) output_path="${para#*=}";; esac
done
mkdir -p "$output_path"
output_path="$(cd "$output_path" && pwd)"
# $PYTHON, else the project's .venv, else python3.
if [[ -n "${PYTHON:-}" ]]; then python="$PYTHON"; elif [[ -x "$repo/.venv/bin/python" ]]; then
  python="$repo/.venv/bin/python"; else python="python3"; fi

ports=""
if ! (cd "$repo" && "$python" -c "import npu_bridge" >/dev/null 2>&1); then
  ports="$(cd "$repo" && "$python" -c "from launch.spawn import free_ports; print(*free_ports($RANK_SIZE), sep=',')")"
fi

declare -A rank_of
pids=()
for ((r = 0; r < RANK_SIZE; r++)); do
  mkdir -p "$output_path/$r"
  env_args=(RANK_ID="$r" DEVICE_INDEX="$r" ASCEND_DEVICE_ID="$r")
  if [[ -n "$ports" ]]; then
    env_args+=(TF_CONFIG="$(cd "$repo" && "$python" -c "from launch.spawn import tf_config; print(tf_config([$ports], $r))")")
  fi
  # Its own process group, so that stopping it stops its python and input workers too.
  env "${env_args[@]}" setsid "$launch/run_1p.sh" "$mode" --batch_size=64 "$@" > "$output_path/$r/run_1p_$r.out" 2>&1 &
  pids+=($!)
  rank_of[$!]=$r
done

stop_all() {
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null; done
  sleep 5
  for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null; done
}
trap 'echo "run_8p.sh: interrupted; stopping every rank" >&2; stop_all; exit 130' INT TERM

status=0
killer=""
running=("${pids[@]}")
while (( ${#running[@]} )); do
  wait -n -p done_pid "${running[@]}"
  code=$?
  still=()
  for pid in "${running[@]}"; do [[ "$pid" != "$done_pid" ]] && still+=("$pid"); done
  running=("${still[@]}")
  if (( code != 0 && status == 0 )); then
    status=$code
    r="${rank_of[$done_pid]}"
    echo "run_8p.sh: rank $r failed (exit $code), log: $output_path/$r/train_$r.log; the others get 30 s to stop" >&2
    tail -n 3 "$output_path/$r/run_1p_$r.out" >&2
    (sleep 30; for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null; done) &
    killer=$!
  fi
done
if [[ -n "$killer" ]]; then kill "$killer" 2>/dev/null; fi
cat "$output_path/0/run_1p_0.out"
exit "$status"
