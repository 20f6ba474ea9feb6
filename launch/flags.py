"""Every flag of `python -m launch.train`, and the checks that reject a bad combination before any work starts.

Flag names follow the Ascend ModelZoo and TPU trainers (`--iterations_per_loop`, `--precision_mode`,
`--train_batch_size`, `--lr_warmup_epochs`), so users can carry their command lines over.
"""
import math
import os

from absl import flags

from input import augment
from input import filesystem
from input.datasets import DATASET_NAMES
from input.errors import InputError
from launch import errors
from vit_raw import configs

PRECISION_MODES = ("auto", "allow_mix_precision", "force_fp16", "allow_fp32_to_fp16", "must_keep_origin_dtype",
                   "force_fp32")
# The modes that ask for reduced-precision compute (float16 on a GPU; bfloat16 on a CPU: forced by force_fp16, by
# launch/device.py's rule for the others).
REDUCED_PRECISION_MODES = ("allow_mix_precision", "force_fp16", "allow_fp32_to_fp16")
DEFAULT_NUM_EPOCHS = 50.0
DEFAULT_LR_WARMUP_EPOCHS = 2.0
# PIL's decompression-bomb limit (Image.MAX_IMAGE_PIXELS), about 9,500 x 9,500.
DEFAULT_MAX_IMAGE_PIXELS = 89478485
AUGMENT_CROPS = ("auto", "inception", "crop", "none")
# Flags that change neither the model nor the optimisation (a resume may change them without a warning), and
# those of them that may differ between the ranks of one run (paths as each machine sees them): tagged where they
# are defined below.
COSMETIC_FLAGS = set()
PER_RANK_FLAGS = {"data_dir"}


def _cosmetic(holder):
  """Tags the flag of an absl FlagHolder as cosmetic (see COSMETIC_FLAGS); returns the holder."""
  COSMETIC_FLAGS.add(holder.name)
  PER_RANK_FLAGS.add(holder.name)
  return holder


def define_flags():
  """Registers the trainer's flags on absl's global FLAGS (idempotent, so tests may import twice)."""
  if "train_batch_size" in flags.FLAGS:
    return
  # Data.
  flags.DEFINE_string(
      "dataset", None, "Dataset: %s. Default: digits (the embedded 8x8 digits) without --data_dir, "
      "auto (recognised from the folder's files) with it." % " | ".join(DATASET_NAMES))
  flags.DEFINE_string(
      "data_dir", None, "The dataset's folder: CIFAR-10/100 python pickles (cifar-10-batches-py/, "
      "cifar-100-python/), an ImageFolder tree (train/ and val/ of class folders), train.txt / "
      "val.txt list files (or one .txt list), IDX files or TFRecord shards. A local path, a file:// URL, or a "
      "URL TensorFlow reads (gs://; s3:// and hdfs:// on TF 1.15 or with tensorflow-io; ram:// on TF 2). Not "
      "given: the embedded digits.")
  _cosmetic(
      flags.DEFINE_string(
          "cache_dir", None, "Base folder of the input caches: the indexes of TFRecord shards that cannot be "
          "indexed beside them (read-only or remote folders) in vit_tfrecord_index/, ImageFolder listings in "
          "vit_listing/ (so a resume does not walk the tree again). Default: $XDG_CACHE_HOME, else ~/.cache."))
  flags.DEFINE_integer("image_size", 16, "Side of the square model input in pixels; must be divisible by the patch.")
  flags.DEFINE_integer("train_batch_size", 64, "Training (micro-)batch size per device (per rank); see "
                       "--accum_steps.")
  _cosmetic(
      flags.DEFINE_integer(
          "eval_batch_size", 128, "Evaluation batch size. Left at its default it shrinks to a smaller "
          "test split; given explicitly it must fit."))
  _cosmetic(
      flags.DEFINE_integer(
          "workers", None, "Decode/augment worker processes of the input pipeline (default: one per "
          "usable core; 0 decodes in the trainer's own thread, for debugging)."))
  _cosmetic(
      flags.DEFINE_enum(
          "malloc", "auto", ["auto", "tcmalloc", "system"], "Memory allocator of the trainer's process (on the "
          "command line, not in a flagfile: it is read before the process restarts): auto uses tcmalloc "
          "(libtcmalloc-minimal4) when the machine has it, restarting itself once with it preloaded (glibc's "
          "malloc faults every step's activations in again: up to 2.6x slower here); tcmalloc insists; system "
          "keeps glibc's. VIT_MALLOC in the environment sets the default."))
  flags.DEFINE_enum(
      "augment", "auto", list(AUGMENT_CROPS), "Training crop: inception (random resized crop, as official "
      "fine-tuning) | crop (pad by --crop_padding and cut a random crop of the input size: the CIFAR standard) | "
      "none (the eval resize, still reshuffled every epoch). auto: none for digits (a crop destroys an 8x8 digit), "
      "inception otherwise.")
  flags.DEFINE_integer("crop_padding", 4, "Pixels of padding on each side for --augment=crop.")
  flags.DEFINE_bool(
      "hflip", None, "Mirror training images with probability 1/2. Default: on with --augment="
      "inception/crop, off with none.")
  flags.DEFINE_string(
      "randaugment", "", "RandAugment in timm's spec language, e.g. rand-m9-mstd0.5-inc1 (m: magnitude 0-10, n: "
      "ops per image, mstd: magnitude noise, inc1: the increasing-severity op set); empty: off.")
  flags.DEFINE_float("color_jitter", 0.0, "Colour jitter strength (brightness, contrast, saturation); 0: off.")
  flags.DEFINE_float("random_erasing", 0.0, "Probability of random erasing per image (DeiT's per-pixel mode); 0: off.")
  flags.DEFINE_float("mixup", 0.0, "Mixup alpha (Beta(alpha, alpha) mixing weight); 0: off. Soft targets.")
  flags.DEFINE_float("cutmix", 0.0, "CutMix alpha; 0: off. With --mixup too, one of them per batch.")
  flags.DEFINE_float("mixup_prob", 1.0, "Probability that a batch is mixed at all (Mixup or CutMix).")
  flags.DEFINE_float("mixup_switch_prob", 0.5, "With both --mixup and --cutmix: probability of CutMix for a batch.")
  flags.DEFINE_float("mixup_off_epoch", None, "Mixing stops from this epoch on (default: never).")
  flags.DEFINE_integer(
      "label_offset", None, "TFRecord datasets: added to the stored labels (official ImageNet shards store 1..1000 "
      "with 0 a background class: -1; TFDS: 0). Default: from the layout. A label outside the classes after the "
      "offset stops the run.")
  _cosmetic(
      flags.DEFINE_integer(
          "max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS, "Images whose header declares more pixels "
          "are skipped before decoding (decompression-bomb guard; PIL's limit by default)."))
  _cosmetic(
      flags.DEFINE_float(
          "input_timeout", 300.0, "Seconds an input worker may spend on one image (a read from a hung network "
          "mount, a decode that blocks) before the run names the worker and the file and stops; checkpoints so far "
          "are kept. 0: wait forever. Not watched with --workers=0."))
  flags.DEFINE_integer("seed", 0, "Seed (>= 0) of the weight initialisation, dropout and the data order.")
  _cosmetic(
      flags.DEFINE_integer(
          "rank", None, "This process's data-parallel rank; default: what the engine says (horovodrun, "
          "TF_CONFIG, $RANK_ID). Given, it must agree with it."))
  flags.DEFINE_integer(
      "num_ranks", None, "Number of data-parallel ranks; default: what the engine says (horovodrun, "
      "TF_CONFIG, $RANK_SIZE), else 1. Given, it must agree with it.")
  _cosmetic(
      flags.DEFINE_enum(
          "distribute", "auto", ["auto", "none", "horovod", "collective", "hccl"], "Data-parallel engine: horovod "
          "(under horovodrun; TF 1.15 stack) | collective (TensorFlow collective ops, cluster from TF_CONFIG) | hccl "
          "(NPU; RANK_ID/RANK_SIZE/RANK_TABLE_FILE) | none. auto: hccl on the NPU with RANK_SIZE > 1, horovod under "
          "horovodrun, collective with TF_CONFIG, else none. `python -m launch.spawn` starts local ranks."))
  flags.DEFINE_integer(
      "accum_steps", 1, "Micro-batches of --train_batch_size accumulated into one optimizer step (one "
      "all-reduce, one update): global batch = train_batch_size x accum_steps x ranks.")
  flags.DEFINE_bool(
      "scale_lr_by_ranks", False, "Multiply --lr by the number of ranks (Horovod's habit). Off: --lr is "
      "the peak lr of the global batch whatever the rank count.")
  _cosmetic(
      flags.DEFINE_float(
          "allreduce_bucket_mb", None, "Gradients are all-reduced packed into buffers of at most this many "
          "MB (0: one collective per tensor). Default: 4 for the collective engine, 64 for horovod and hccl "
          "(docs/benchmarks.md)."))
  # Model.
  flags.DEFINE_string(
      "model", "tiny", "Model: an official name (ViT-B/16, B_16, ViT-Ti/16, ...) or 'tiny' (patch 4, "
      "width 64, 4 layers, 4 heads, MLP 128: the digits recipe).")
  flags.DEFINE_integer("patch_size", None, "Override the model's patch size (e.g. a small patch for small images).")
  flags.DEFINE_integer("hidden_size", None, "Override the model's token width.")
  flags.DEFINE_integer("num_layers", None, "Override the model's number of encoder blocks.")
  flags.DEFINE_integer("num_heads", None, "Override the model's attention heads.")
  flags.DEFINE_integer("mlp_dim", None, "Override the model's MLP width.")
  flags.DEFINE_enum(
      "stem", "patch", list(configs.STEMS), "How pixels become tokens: patch, the official linear patch embedding; "
      "conv, a convolutional stem of log2(patch) 3x3 stride-2 convolutions with layer norm and ReLU, then a 1x1 "
      "projection (Xiao et al. 2021: it learns faster from small data; official .npz checkpoints have no such stem, "
      "so --init_checkpoint of one and --format npz export refuse it).")
  _cosmetic(
      flags.DEFINE_string(
          "init_checkpoint", None, "Start from an official .npz or a checkpoint of ours (prefix or "
          "folder); the head is re-initialised when the class count differs. Ignored when --model_dir "
          "already has a checkpoint (the run resumes from it)."))
  flags.DEFINE_float("dropout", 0.0, "Dropout rate inside the encoder (0 as in official fine-tuning).")
  flags.DEFINE_float(
      "drop_path", 0.0, "Stochastic depth: the deepest block's residual branches are dropped per example with "
      "this probability, the others linearly less (DeiT: 0.1); 0: off.")
  # Optimisation.
  flags.DEFINE_enum("optimizer", "momentum", ["momentum", "sgd", "adam", "adamw"],
                    "momentum (default, as official fine-tuning) | sgd | adam | adamw (decoupled weight decay).")
  flags.DEFINE_float(
      "lr", 0.1, "Peak learning rate (after warm-up). 0.1: digits recipe; official fine-tuning uses "
      "0.03 at batch 512 (the launch scripts pass it).")
  flags.DEFINE_float("momentum", 0.9, "Momentum of --optimizer=momentum; beta1 of adam/adamw.")
  flags.DEFINE_float(
      "weight_decay", 0.0, "adamw: decoupled decay (times lr); others: L2 penalty 0.5*wd*|w|^2 on the "
      "matrices (kernels), not on biases, norms or embeddings.")
  flags.DEFINE_enum(
      "weight_decay_exempt", "timm", ["timm", "none"], "Which weights --weight_decay spares: timm (biases, norms, "
      "position embedding and class token, timm/DeiT's rule) | none (every weight decays).")
  flags.DEFINE_float(
      "layer_decay", 1.0, "Layer-wise lr decay (BEiT/MAE fine-tuning): block i of L trains at lr x "
      "layer_decay^(L + 1 - layer id), embeddings at layer id 0, the head at L + 1. 1: off.")
  flags.DEFINE_float(
      "ema_decay", 0.0, "Keep an exponential moving average of the weights with this decay (e.g. 0.9999), updated "
      "every step in the graph; evaluation reports both, checkpoints hold it, export/infer use it. 0: off.")
  flags.DEFINE_float("grad_clip_norm", 1.0, "Clip gradients to this global norm (0: off). 1 as in official ViT.")
  flags.DEFINE_float(
      "label_smoothing", 0.1, "Label smoothing of the softmax cross-entropy (0.1: digits recipe; "
      "official fine-tuning uses 0).")
  flags.DEFINE_enum(
      "lr_schedule", "cosine", ["cosine", "linear", "exponential"], "Decay after warm-up: cosine | "
      "linear (to lr*lr_decay_value) | exponential (times lr_decay_value every lr_decay_epochs).")
  flags.DEFINE_float(
      "lr_decay_value", None, "cosine/linear: final lr as a fraction of --lr (default 0); "
      "exponential: factor per --lr_decay_epochs (default 0.1).")
  flags.DEFINE_float("lr_decay_epochs", 1.0, "exponential: epochs between two decays.")
  flags.DEFINE_float(
      "lr_warmup_epochs", None, "Linear warm-up length in epochs (default %g; or --lr_warmup_steps). "
      "Left at its default in a run no longer than the warm-up, it shrinks to a tenth of the run." %
      DEFAULT_LR_WARMUP_EPOCHS)
  flags.DEFINE_integer("lr_warmup_steps", None, "Linear warm-up length in steps (instead of --lr_warmup_epochs).")
  flags.DEFINE_float("num_epochs", None,
                     "Training length in epochs (default %g when --train_steps is not given)." % DEFAULT_NUM_EPOCHS)
  flags.DEFINE_integer("train_steps", None, "Training length in steps (instead of --num_epochs).")
  flags.DEFINE_integer(
      "iterations_per_loop", 10, "Training steps per sess.run (NPU: set_iteration_per_loop; "
      "CPU/GPU: an in-graph tf.while_loop); loss curves equal N=1 for the same seed. Left at its "
      "default it shrinks to a shorter epoch; given explicitly it must fit in one.")
  # Precision.
  flags.DEFINE_enum(
      "precision_mode", "auto", list(PRECISION_MODES), "NPU: passed to the adapter as is (auto = "
      "allow_mix_precision). GPU: float16 compute for the mixed/fp16 modes. CPU: force_fp16 = bfloat16 "
      "compute; allow_mix_precision / allow_fp32_to_fp16 = bfloat16 only on TF 2.x with native bf16 "
      "(avx512_bf16/amx_bf16) and a bf16 matmul >= 1.25x fp32's, else float32 (TF 1.x: always, its "
      "bf16 step is slower; docs/benchmarks.md). auto on GPU = allow_mix_precision, on CPU = float32.")
  flags.DEFINE_string(
      "loss_scale", "auto", "dynamic | a number | off. auto: dynamic for float16 compute (GPU, NPU "
      "mixed precision), off for float32/bfloat16.")
  flags.DEFINE_float("loss_scale_init", 2.0**15, "Initial dynamic loss scale.")
  flags.DEFINE_integer("loss_scale_growth_steps", 1000, "Dynamic loss scale doubles after this many good steps.")
  # Ascend debugging (emulated on CPU/GPU).
  _cosmetic(
      flags.DEFINE_bool(
          "over_dump", False, "NPU: overflow dump (enable_dump_debug). CPU/GPU: name the first op that "
          "produced inf/NaN on an overflowing step."))
  _cosmetic(
      flags.DEFINE_string(
          "over_dump_path", None, "Where overflow dumps go (default: <model_dir>/overflow). The NPU has "
          "one dump_path for both dumps: with --data_dump_flag it must equal --data_dump_path."))
  _cosmetic(
      flags.DEFINE_bool(
          "data_dump_flag", False, "NPU: dump tensors of --data_dump_step (enable_dump). CPU/GPU: save that "
          "step's key tensors as .npy."))
  _cosmetic(flags.DEFINE_string("data_dump_step", "10", "Step(s) to dump, '|'-separated as on Ascend (e.g. '0|5|10')."))
  _cosmetic(flags.DEFINE_string("data_dump_path", None, "Where data dumps go (default: <model_dir>/data_dump)."))
  _cosmetic(
      flags.DEFINE_bool(
          "profiling", False, "NPU: profiling_mode with --profiling_options. CPU/GPU: a Chrome trace of a "
          "few loops in <model_dir>/profile."))
  _cosmetic(
      flags.DEFINE_string(
          "profiling_options", None, "NPU profiling options JSON (default: training and task trace, "
          "output <model_dir>/profile)."))
  _cosmetic(
      flags.DEFINE_integer("profiling_steps", 3, "CPU/GPU: how many loops (sess.run calls) to trace after warm-up."))
  _cosmetic(flags.DEFINE_string("fusion_switch_file", None, "NPU: fusion switch config file passed to the adapter."))
  flags.DEFINE_enum(
      "kernels", "auto", ["auto", "plain", "xla"], "Implementation of layer norm, GELU and softmax "
      "(vit_raw/kernels.py): plain TF ops, or each chain in its own XLA cluster. auto = Ascend's ops on the NPU, "
      "elsewhere the measured default of this TensorFlow (launch/device.py: kernel_set).")
  _cosmetic(
      flags.DEFINE_bool(
          "xla_cache", False, "TF 2.x: keep the compiled XLA clusters on disk (TensorFlow's persistent XLA cache, "
          "in <--cache_dir>/vit_xla/, one folder per TF version and CPU), so a later run of the same model loads "
          "them instead of compiling again (the Fashion-MNIST recipe's start-up: 8.0-8.6 s cold, 3.6 s warm; the "
          "numbers trained are the same). Off by default because TF 2.21 prints two or three harmless E-level "
          "lines per cluster it loads (a text-format parse it tries first, a CPU tuning-feature note). Ignored on "
          "TF 1.15 and when TF_XLA_FLAGS already names a cache folder."))
  flags.DEFINE_list(
      "lean_backward", ["auto"], "Chains whose backward is hand-written to keep only their inputs and recompute "
      "the rest (vit_raw/kernels.py: lean_*): a comma list of layer_norm, attention, mlp, or none (TensorFlow's "
      "automatic gradients), or auto = all three in float32 (faster, 1.1-1.3 GB less peak for ViT-B/16 @224 "
      "batch 8), layer_norm alone in bfloat16/float16 (the recomputation costs time there).")
  # Run.
  _cosmetic(
      flags.DEFINE_enum("mode", "train_and_eval", ["train", "eval", "train_and_eval"],
                        "train | eval (the latest checkpoint, or --init_checkpoint) | train_and_eval."))
  _cosmetic(
      flags.DEFINE_integer("eval_every_loops", 0,
                           "Evaluate every this many loops (0: once per epoch); always at the end."))
  _cosmetic(
      flags.DEFINE_bool(
          "eval_hflip", False, "Also report each evaluation with test-time flip averaging: the softmax of every "
          "test image and of its mirror image averaged, as hflip_top1/hflip_top5 (ema_hflip_* for the EMA). The "
          "mirror images go through the same forward pass, so the eval batch is twice --eval_batch_size; top1 and "
          "the best checkpoint stay the plain ones. Pays where the training flips: +0.5 point on Fashion-MNIST."))
  _cosmetic(
      flags.DEFINE_string(
          "model_dir", "runs/default", "The run folder: checkpoints, TensorBoard events, train.log, "
          "metrics.jsonl, flags.txt, class_names.txt. A run resumes from its latest checkpoint. A local path "
          "(or file:// URL): train.log and metrics.jsonl are appended and the run is locked with fcntl."))
  _cosmetic(
      flags.DEFINE_integer("save_every_loops", 0, "Checkpoint every this many loops (0: once per epoch); always at the "
                           "end."))
  _cosmetic(flags.DEFINE_integer("keep_checkpoints", 3, "How many checkpoints to keep."))
  _cosmetic(
      flags.DEFINE_integer("log_every_loops", 1, "Write a log line every this many loops (the first and last loops "
                           "always have one)."))
  _cosmetic(
      flags.DEFINE_integer(
          "warmup_loops", 0, "Loops left out of the mean img/s besides the first (which builds and "
          "compiles the graph and is never timed). 0: those ending within the first 50 steps."))
  _cosmetic(
      flags.DEFINE_enum("device", "auto", ["auto", "npu", "gpu", "cpu"],
                        "auto picks the NPU when npu_bridge imports, else a visible GPU, else the CPU."))


def trainer_flag_names():
  """Names of the flags defined here (launch.train's own, without absl's or TensorFlow's), in definition order."""
  return [flag.name for flag in flags.FLAGS.get_flags_for_module(__name__)]


FlagError = errors.UsageError  # a bad flag value or combination (launch/errors.py)

# The path flags that may be given as file:// URLs (they become plain paths before anything reads them).
PATH_FLAGS = ("data_dir", "model_dir", "init_checkpoint", "cache_dir", "over_dump_path", "data_dump_path",
              "fusion_switch_file")


def resolve_file_urls(f):
  """Turns every file:// URL among the PATH_FLAGS into its plain path, in place (so flags.txt records the path);
  raises FlagError for a file:// URL of another host."""
  for name in PATH_FLAGS:
    value = getattr(f, name)
    if value and filesystem.scheme(value) == "file":
      try:
        setattr(f, name, filesystem.to_local(value))
      except InputError as e:
        raise FlagError("--%s=%s" % (name, e))


def check_flags(f):
  """Raises FlagError for a bad flag that can be judged without opening data or building the model."""
  if f.num_epochs is not None and f.train_steps is not None:
    raise FlagError("--num_epochs and --train_steps conflict: give one of them")
  if f.lr_warmup_epochs is not None and f.lr_warmup_steps is not None:
    raise FlagError("--lr_warmup_epochs and --lr_warmup_steps conflict: give one of them")
  for name in trainer_flag_names():
    value = getattr(f, name)
    if isinstance(value, float) and not math.isfinite(value):
      raise FlagError("--%s=%s is not a finite number" % (name, value))
  _check_at_least(f, 1, "train_batch_size", "accum_steps", "eval_batch_size", "image_size", "iterations_per_loop",
                  "log_every_loops", "keep_checkpoints", "max_image_pixels", "profiling_steps",
                  "loss_scale_growth_steps")
  _check_at_least(f, 0, "seed", "workers", "eval_every_loops", "save_every_loops", "warmup_loops", "lr_warmup_steps",
                  "weight_decay", "grad_clip_norm", "lr_warmup_epochs", "momentum", "allreduce_bucket_mb",
                  "input_timeout")
  for name in ("num_epochs", "train_steps", "lr", "lr_decay_epochs", "loss_scale_init"):
    if getattr(f, name) is not None and not getattr(f, name) > 0:
      raise FlagError("--%s must be positive, got %s" % (name, getattr(f, name)))
  if not 0 <= f.dropout < 1:
    raise FlagError("--dropout must be in [0, 1), got %s" % f.dropout)
  if not 0 <= f.label_smoothing < 1:
    raise FlagError("--label_smoothing must be in [0, 1), got %s" % f.label_smoothing)
  _check_regularisers(f)
  if f.dataset is not None and f.dataset not in DATASET_NAMES:
    raise FlagError("--dataset=%s is unknown; expected one of %s" % (f.dataset, ", ".join(DATASET_NAMES)))
  if f.dataset not in (None, "digits") and not f.data_dir:
    raise FlagError("--dataset=%s needs --data_dir (the folder holding it)" % f.dataset)
  lean = [v.strip() for v in f.lean_backward]
  if not (lean in (["auto"], ["none"]) or set(lean) <= {"layer_norm", "attention", "mlp"}):
    raise FlagError("--lean_backward=%s: expected auto, none, or a comma list of layer_norm, attention, mlp" %
                    ",".join(f.lean_backward))
  parse_loss_scale(f.loss_scale)
  parse_dump_steps(f.data_dump_step)
  if f.num_ranks is not None and f.num_ranks < 1:
    raise FlagError("--num_ranks must be at least 1, got %s" % f.num_ranks)
  if f.rank is not None and f.num_ranks is not None and not 0 <= f.rank < f.num_ranks:
    raise FlagError("--rank=%d is outside [0, --num_ranks=%d)" % (f.rank, f.num_ranks))
  if f.over_dump and f.data_dump_flag and f.over_dump_path and f.data_dump_path and (os.path.abspath(
      f.over_dump_path) != os.path.abspath(f.data_dump_path)):
    raise FlagError("--over_dump_path=%s and --data_dump_path=%s differ, but the NPU writes both dumps to one "
                    "dump_path: give one of them (or the same folder)" % (f.over_dump_path, f.data_dump_path))
  _check_paths(f)


def _check_regularisers(f):
  """The recipe flags: augmentation, mixing, stochastic depth, EMA, layer decay."""
  for name in ("mixup", "cutmix"):
    if getattr(f, name) < 0:
      raise FlagError("--%s=%s: a Beta alpha must be > 0 (or 0 for off)" % (name, getattr(f, name)))
  for name in ("mixup_prob", "mixup_switch_prob", "random_erasing"):
    if not 0 <= getattr(f, name) <= 1:
      raise FlagError("--%s=%s: expected a probability in [0, 1]" % (name, getattr(f, name)))
  if f.mixup_off_epoch is not None and f.mixup_off_epoch < 0:
    raise FlagError("--mixup_off_epoch=%s: expected an epoch >= 0" % f.mixup_off_epoch)
  if f.color_jitter < 0:
    raise FlagError("--color_jitter=%s: expected a strength >= 0 (0: off)" % f.color_jitter)
  if f.randaugment:
    try:
      augment.parse_randaugment(f.randaugment)
    except InputError as e:
      raise FlagError("--randaugment=%s: %s" % (f.randaugment, str(e).split(": ", 1)[-1]))
  if f.crop_padding < 0:
    raise FlagError("--crop_padding=%s: expected pixels >= 0" % f.crop_padding)
  if not 0 <= f.drop_path < 1:
    raise FlagError("--drop_path must be in [0, 1), got %s" % f.drop_path)
  if f.ema_decay != 0 and not 0 < f.ema_decay < 1:
    raise FlagError("--ema_decay=%s: expected a decay in (0, 1), e.g. 0.9999, or 0 for off" % f.ema_decay)
  if not 0 < f.layer_decay <= 1:
    raise FlagError("--layer_decay=%s: expected a factor in (0, 1] (1: off)" % f.layer_decay)


def _check_at_least(f, low, *names):
  for name in names:
    value = getattr(f, name)
    if value is not None and value < low:
      raise FlagError("--%s must be %s, got %s" % (name, "positive" if low == 1 else ">= %s" % low, value))


def _check_paths(f):
  """The run folder must be a local folder we can write; --data_dir one we can read."""
  for name in ("model_dir", "cache_dir", "init_checkpoint"):
    value = getattr(f, name)
    if value and filesystem.is_url(value):
      raise FlagError(_REMOTE_REFUSED[name] % (name, value, filesystem.scheme(value)))
  if os.path.exists(f.model_dir) and not os.path.isdir(f.model_dir):
    raise FlagError("--model_dir=%s is a file, not a folder; give a folder for the run" % f.model_dir)
  existing = f.model_dir
  while existing and not os.path.exists(existing):
    existing = os.path.dirname(existing.rstrip(os.sep))
  existing = existing or "."
  if not os.path.isdir(existing):
    raise FlagError("--model_dir=%s cannot be created: %s is a file" % (f.model_dir, existing))
  if not os.access(existing, os.W_OK | os.X_OK):
    raise FlagError("--model_dir=%s is not writable (no write permission on %s)" % (f.model_dir, existing))
  if f.data_dir and not filesystem.is_url(f.data_dir) and os.path.exists(
      f.data_dir) and not os.access(f.data_dir, os.R_OK | (os.X_OK if os.path.isdir(f.data_dir) else 0)):
    raise FlagError("--data_dir=%s is not readable (no read permission)" % f.data_dir)


_REMOTE_REFUSED = {
    "model_dir": ("--%s=%s: a run folder must be on a local (or mounted) file system: train.log and metrics.jsonl "
                  "are appended line by line and the run is locked with fcntl, which %s:// offers neither of; give "
                  "a local folder and copy it up after (or during) the run"),
    "cache_dir": "--%s=%s: the input caches are written with local renames, %s:// is not supported: give a local "
                 "folder",
    "init_checkpoint": "--%s=%s: checkpoints are read from local paths only (not %s://): copy it to a local path "
                       "first",
}


def parse_loss_scale(value):
  """'auto' | 'dynamic' | 'off' | a positive number -> ('auto'|'dynamic'|'fixed'|'off', float or None)."""
  text = str(value).strip().lower()
  if text in ("auto", "dynamic"):
    return text, None
  if text in ("off", "none", "1", "1.0"):
    return "off", None
  try:
    number = float(text)
  except ValueError:
    raise FlagError("--loss_scale=%s is not dynamic, off, auto or a number" % value)
  if not number > 0:
    raise FlagError("--loss_scale must be positive, got %s" % value)
  return "fixed", number


def parse_dump_steps(value):
  """'0|5|10' -> [0, 5, 10] (the Ascend dump_step syntax)."""
  try:
    steps = [int(s) for s in str(value).split("|") if s.strip()]
  except ValueError:
    raise FlagError("--data_dump_step=%s is not a '|'-separated list of step numbers" % value)
  if any(s < 0 for s in steps):
    raise FlagError("--data_dump_step=%s has a negative step" % value)
  return steps
