#!/usr/bin/env bash
# One process of ViT training in the Ascend ModelZoo test-script convention; train_full_1p.sh and
# train_performance_1p.sh call this with "full" or "performance" first, and run_8p.sh once per device with RANK_ID,
# RANK_SIZE and RANK_TABLE_FILE set. See docs/launch_scripts.md.
#
#   --data_path=DIR       dataset folder (CIFAR-100 python folder, ImageFolder, list, TFRecords) or a URL (gs://,
#                         file://, ...: passed on unchanged); empty: the embedded digits
#   --output_path=DIR     where output/${ASCEND_DEVICE_ID}/ goes (default ./output)
#   --ckpt_path=FILE      official .npz (or a checkpoint of ours) to fine-tune from
#   --precision_mode=M    allow_mix_precision (default) | force_fp16 | allow_fp32_to_fp16 | must_keep_origin_dtype | force_fp32
#   --over_dump[=True]  --data_dump_flag[=True]  --data_dump_step=N  --profiling[=True]
#   --batch_size=N        images per device per optimizer step (default 512 on one device)
#   --micro_batch_size=N  images per device per forward/backward (default 32, what ViT-B/16 at 384 px leaves room
#                         for on a 32 GB device); batch_size/micro_batch_size micro-batches are accumulated
#   --train_epochs=N | --train_steps=N
#   any other --flag=value goes to python -m launch.train unchanged (later flags win), e.g. --model=ViT-S/16
# ASCEND_DEVICE_ID (default 0) picks the device and names the output folder. With RANK_SIZE > 1 every rank shares
# one run folder, output/ckpt_${RANK_SIZE}p, and rank 0 alone prints the summary.
set -euo pipefail

mode="$1"; shift
case "$mode" in full|performance) ;; *) echo "run_1p.sh: first argument must be full or performance" >&2; exit 2;; esac

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ASCEND_DEVICE_ID="${ASCEND_DEVICE_ID:-0}"
RANK_SIZE="${RANK_SIZE:-1}"
RANK_ID="${RANK_ID:-0}"
export ASCEND_DEVICE_ID RANK_SIZE RANK_ID

# The official vit_jax fine-tuning recipe for CIFAR-100 (configs/common.py + augreg): ViT-B/16 at 384, batch 512,
# SGD momentum 0.9, lr 0.03, cosine decay, 500 warm-up steps, 10k steps, global-norm clip 1, no weight decay.
Network="ViT-B_16"
model="ViT-B/16"
image_size=384
data_path=""
output_path="./output"
ckpt_path=""
precision_mode="allow_mix_precision"
over_dump=False
data_dump_flag=False
data_dump_step=10
profiling=False
batch_size=512
micro_batch_size=32
train_epochs=""
train_steps=10000
if [[ "$mode" == performance ]]; then train_steps=200; fi
extra=()

for para in "$@"; do
  case "$para" in
    --data_path=*) data_path="${para#*=}";;
    --output_path=*) output_path="${para#*=}";;
    --ckpt_path=*) ckpt_path="${para#*=}";;
    --precision_mode=*) precision_mode="${para#*=}";;
    --over_dump) over_dump=True;;
    --over_dump=*) over_dump="${para#*=}";;
    --data_dump_flag) data_dump_flag=True;;
    --data_dump_flag=*) data_dump_flag="${para#*=}";;
    --data_dump_step=*) data_dump_step="${para#*=}";;
    --profiling) profiling=True;;
    --profiling=*) profiling="${para#*=}";;
    --batch_size=*) batch_size="${para#*=}";;
    --micro_batch_size=*) micro_batch_size="${para#*=}";;
    --train_epochs=*) train_epochs="${para#*=}"; train_steps="";;
    --train_steps=*) train_steps="${para#*=}"; train_epochs="";;
    --model=*) model="${para#*=}"; Network="$(echo "$model" | sed 's#/#_#g')"; extra+=("$para");;
    --*) extra+=("$para");;
    *) echo "run_1p.sh: unexpected argument $para (flags are --name=value)" >&2; exit 2;;
  esac
done

# $PYTHON, else the project's .venv, else python3.
if [[ -n "${PYTHON:-}" ]]; then python="$PYTHON"; elif [[ -x "$repo/.venv/bin/python" ]]; then
  python="$repo/.venv/bin/python"; else python="python3"; fi
is_true() { [[ "$1" == True || "$1" == true || "$1" == 1 ]]; }

# Micro-batches: the per-device batch of one optimizer step is accumulated from batch_size/micro_batch_size
# forward/backward passes that fit in device memory (launch.train --accum_steps).
if (( batch_size > micro_batch_size )); then
  if (( batch_size % micro_batch_size )); then
    echo "run_1p.sh: --batch_size=$batch_size is not a multiple of --micro_batch_size=$micro_batch_size" >&2; exit 2
  fi
  accum_steps=$((batch_size / micro_batch_size)); micro=$micro_batch_size
else
  accum_steps=1; micro=$batch_size
fi

# The trainer runs from the repository (cd below): a relative local path is made absolute here, against the caller's
# folder; a URL (gs://, s3://, file://, ...) is passed on as it is, never tested with [ -d ] or resolved.
from_here() { if [[ -n "$1" && "$1" != /* && "$1" != *://* ]]; then echo "$PWD/$1"; else echo "$1"; fi; }
data_path="$(from_here "$data_path")"
ckpt_path="$(from_here "$ckpt_path")"

mkdir -p "$output_path/$ASCEND_DEVICE_ID"
output_path="$(cd "$output_path" && pwd)"
out_dir="$output_path/$ASCEND_DEVICE_ID"
log="$out_dir/train_${ASCEND_DEVICE_ID}.log"
if (( RANK_SIZE > 1 )); then model_dir="$output_path/ckpt_${RANK_SIZE}p"; else model_dir="$out_dir/ckpt"; fi

args=(--model="$model" --image_size="$image_size" --train_batch_size="$micro" --accum_steps="$accum_steps"
      --eval_batch_size="$micro"
      --optimizer=momentum --momentum=0.9 --lr=0.03 --lr_schedule=cosine --lr_warmup_steps=500
      --grad_clip_norm=1 --weight_decay=0 --label_smoothing=0 --dropout=0 --augment=inception
      --precision_mode="$precision_mode" --model_dir="$model_dir"
      --data_dump_step="$data_dump_step")
if [[ -n "$data_path" ]]; then args+=(--data_dir="$data_path"); fi
if [[ -n "$ckpt_path" ]]; then args+=(--init_checkpoint="$ckpt_path"); fi
if [[ -n "$train_epochs" ]]; then args+=(--num_epochs="$train_epochs"); else args+=(--train_steps="$train_steps"); fi
# The NPU writes both dumps to one dump_path.
if is_true "$over_dump"; then args+=(--over_dump --over_dump_path="$out_dir/dump"); fi
if is_true "$data_dump_flag"; then args+=(--data_dump_flag --data_dump_path="$out_dir/dump"); fi
if is_true "$profiling"; then args+=(--profiling); fi
if [[ "$mode" == full ]]; then args+=(--mode=train_and_eval); else args+=(--mode=train); fi

start=$(date +%s)
cd "$repo"
echo "python -m launch.train ${args[*]} ${extra[*]:-}" > "$log"
set +e
"$python" -m launch.train "${args[@]}" "${extra[@]}" >> "$log" 2>&1
status=$?
set -e
end=$(date +%s)
e2e_time=$((end - start))
if [[ $status -ne 0 ]]; then
  tail -n 5 "$log" >&2
  echo "run_1p.sh: training failed (exit $status), log: $log" >&2
  exit $status
fi
if (( RANK_ID != 0 )); then exit 0; fi  # the run's numbers are rank 0's (img/s counts every rank's images)

# The numbers come from the run's metrics.jsonl (tools/parse_log.py), not from grepping the log.
get() { "$python" -m tools.parse_log --get "$1" "$model_dir"; }
FPS=$(get mean_ips)
loss=$(get final_loss)
step_ms=$(get median_step_ms)
echo "Final Performance images/sec : $FPS"
if [[ "$mode" == full ]]; then
  train_accuracy=$(get final_top1)
  echo "Final Train Accuracy : $train_accuracy"
fi
echo "E2E Training Duration sec : $e2e_time"

BatchSize="$batch_size"
RankSize="$RANK_SIZE"
DeviceType="$(uname -m)"
if [[ "$mode" == full ]]; then kind=acc; else kind=perf; fi
CaseName="${Network}_bs${BatchSize}_${RankSize}p_${kind}"
{
  echo "Network = ${Network}"
  echo "RankSize = ${RankSize}"
  echo "BatchSize = ${BatchSize}"
  echo "DeviceType = ${DeviceType}"
  echo "CaseName = ${CaseName}"
  echo "ActualFPS = ${FPS}"
  echo "TrainingTime = ${step_ms}"
  echo "ActualLoss = ${loss}"
  echo "E2ETrainingTime = ${e2e_time}"
  if [[ "$mode" == full ]]; then echo "TrainAccuracy = ${train_accuracy}"; fi
} > "$out_dir/${CaseName}.log"
