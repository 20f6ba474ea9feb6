"""Turns the flags into a checked RunPlan: datasets opened, model shape, step counts, backend, precision.

Everything that can be wrong with a command line is found here, before any graph or worker exists, and raised as
FlagError with one line (train.py prints it and exits with code 2).
"""
import collections
import math
import os

import tensorflow.compat.v1 as tf

from input import datasets
from input import sampling
from launch import checkpoints
from launch import device as device_lib
from launch import distributed
from launch.flags import (DEFAULT_LR_WARMUP_EPOCHS, DEFAULT_NUM_EPOCHS, REDUCED_PRECISION_MODES, FlagError,
                          parse_dump_steps, parse_loss_scale, trainer_flag_names)
from vit_raw import configs
from vit_raw.cpu_config import usable_cores


def _record(name, fields, doc):
  cls = collections.namedtuple(name, fields)
  cls.__doc__ = doc
  return cls


ModelPlan = _record(
    "ModelPlan",
    ["config", "image_size", "num_classes", "dropout", "drop_path", "kernels", "lean_backward", "init_checkpoint"],
    """The model.

Attributes:
  config: the vit_raw ViTConfig (with any shape overrides); image_size: side of the model input.
  num_classes: classes of the head (from the training split).
  dropout, drop_path: dropout rate inside the encoder; stochastic depth rate of the deepest block.
  kernels: "npu" | "plain" | "xla": the vit_raw.kernels set (--kernels=auto resolved for this device and stack).
  lean_backward: the kernels.LEAN_PARTS with hand-written gradients (--lean_backward=auto resolved per dtype).
  init_checkpoint: an official .npz or checkpoint of ours to start from (None: none, or the run resumes).
""")

AugmentPlan = _record(
    "AugmentPlan", ["crop", "padding", "hflip", "randaugment", "color_jitter", "random_erasing"],
    """The training augmentation of the input workers.

Attributes:
  crop: "inception" | "crop" (pad and random crop) | "none" (--augment=auto resolved); padding: for "crop".
  hflip: mirror with probability 1/2; randaugment: timm spec or ""; color_jitter: strength (0 off);
  random_erasing: probability per image (0 off).
""")

MixPlan = _record(
    "MixPlan", ["mixup", "cutmix", "prob", "switch_prob", "off_epoch"], """Mixup / CutMix.

Attributes:
  mixup, cutmix: Beta alphas (0: that one is off); prob: probability a batch is mixed; switch_prob: CutMix's share
  when both are on; off_epoch: the epoch mixing stops at (None: never).
""")

DataPlan = _record(
    "DataPlan", [
        "train_ds", "eval_ds", "class_names", "train_batch_size", "accum_steps", "eval_batch_size", "augment", "mix",
        "workers", "seed", "max_image_pixels", "input_timeout"
    ], """The input pipelines.

Attributes:
  train_ds, eval_ds: input Datasets (eval_ds None in --mode=train); class_names: of the training split.
  train_batch_size, eval_batch_size: per rank, after defaults were fitted to the data.
  accum_steps: micro-batches per optimizer step; a step consumes train_batch_size x accum_steps x num_ranks images.
  augment: an AugmentPlan; mix: a MixPlan, or None when neither Mixup nor CutMix is on.
  workers: decode/augment processes (resolved: one per usable core by default); seed: of the data order and
    augmentation; max_image_pixels: the decompression-bomb budget; input_timeout: seconds a worker may spend on
    one example before the run stops (0: forever).
""")

OptimPlan = _record(
    "OptimPlan", [
        "name", "lr", "momentum", "weight_decay", "weight_decay_exempt", "layer_decay", "grad_clip_norm",
        "label_smoothing", "ema_decay"
    ], """The optimiser and loss.

Attributes:
  name: momentum | sgd | adam | adamw; lr: the peak lr (times num_ranks with --scale_lr_by_ranks).
  momentum: momentum, or Adam's beta1; weight_decay: adamw's decoupled decay, else an L2 term;
  weight_decay_exempt: "timm" (biases, norms, embeddings spared) | "none"; layer_decay: layer-wise lr decay (1 off).
  grad_clip_norm: global-norm clip (0 off); label_smoothing: of the (soft-target) cross-entropy.
  ema_decay: decay of the weights' moving average (0: no EMA).
""")

SchedulePlan = _record(
    "SchedulePlan", [
        "kind", "total_steps", "steps_per_epoch", "warmup_steps", "decay_value", "decay_steps", "iterations",
        "in_graph_loop"
    ], """Steps and lr schedule.

Attributes:
  kind: cosine | linear | exponential; decay_value, decay_steps: its final fraction / factor and period in steps.
  steps_per_epoch, total_steps: optimizer step counts of the whole run (not only what is left of it); on the NPU
    total_steps is a multiple of iterations.
  warmup_steps: linear warm-up length in steps.
  iterations: steps per sess.run; in_graph_loop: run them in a tf.while_loop (CPU/GPU; the NPU repeats the graph).
""")

PrecisionPlan = _record(
    "PrecisionPlan", ["mode", "compute_dtype", "loss_scale_mode", "loss_scale_init", "loss_scale_growth_steps"],
    """Numerics.

Attributes:
  mode: the resolved --precision_mode (never "auto"); compute_dtype: tf.float32/float16/bfloat16 on this device.
  loss_scale_mode, loss_scale_init: "dynamic" | "fixed" | "off" and the initial (or fixed) scale;
  loss_scale_growth_steps: good steps before a dynamic scale doubles.
""")

DebugPlan = _record(
    "DebugPlan", [
        "over_dump_dir", "data_dump_dir", "dump_steps", "npu_dump_dir", "profile_dir", "profiling_options",
        "profiling_steps", "fusion_switch_file"
    ], """Debugging outputs.

Attributes:
  over_dump_dir, data_dump_dir: where --over_dump / --data_dump_flag write (None: off); on CPU/GPU one folder per
    rank with several ranks. dump_steps: the steps --data_dump_flag saves.
  npu_dump_dir: the adapter's single dump_path on the NPU.
  profile_dir: --profiling's output (None: off); profiling_options (NPU), profiling_steps (CPU/GPU loops traced).
  fusion_switch_file: the NPU fusion switch file (or None).
""")

DistPlan = _record(
    "DistPlan", ["engine", "rank", "num_ranks", "allreduce_bucket_mb"], """Data parallelism.

Attributes:
  engine: the launch.engines engine (single, horovod, collective or hccl); rank, num_ranks: from it.
  allreduce_bucket_mb: the gradient packing (None: the engine's default).
""")

LoopPlan = _record(
    "LoopPlan",
    ["log_every_loops", "eval_every_loops", "save_every_loops", "keep_checkpoints", "warmup_loops", "eval_hflip"],
    """When the callbacks fire.

Attributes:
  log_every_loops, eval_every_loops, save_every_loops: in loops (0 for eval / save: once per epoch).
  keep_checkpoints: how many are kept; warmup_loops: loops left out of img/s besides the first.
  eval_hflip: each evaluation also reports the views' accuracy with flip averaging (launch/evaluation.py).
""")

RunPlan = _record(
    "RunPlan", [
        "mode", "device", "model_dir", "seed", "model", "data", "optim", "schedule", "precision", "debug", "dist",
        "loop", "notes", "flag_lines"
    ], """A checked run: the flags resolved
once (every "auto" decided here), the only thing the graph builder and the callbacks read.

Attributes:
  mode: train | eval | train_and_eval; device: "npu" | "gpu" | "cpu"; model_dir: where everything is written.
  seed: of the weight initialisation, dropout, stochastic depth and the data.
  model, data, optim, schedule, precision, debug, dist, loop: the sub-records above.
  notes: lines to log once: defaults that were adapted to this run, and schedule warnings.
  flag_lines: the `--name=value` lines of flags.txt (recorded_flags): --flagfile of them runs this run again.
""")


def _model_config(f):
  try:
    config = configs.get_config(f.model, **{k: getattr(f, k) for k in configs.CONFIG_FIELDS})
  except ValueError as e:
    raise FlagError("--model: %s" % e)
  if f.image_size % config.patch_size:
    raise FlagError("--image_size=%d is not divisible by the patch size %d of %s; use a multiple of %d" %
                    (f.image_size, config.patch_size, config.name, config.patch_size))
  return config


def _open(f, split):
  name = f.dataset or ("auto" if f.data_dir else "digits")
  try:
    return datasets.open_dataset(name, f.data_dir, split, label_offset=f.label_offset, cache_dir=f.cache_dir)
  except ValueError as e:
    raise FlagError("--data_dir/--dataset: %s" % e)


def _loss_scale(f, device, precision_mode, compute_dtype):
  mode, value = parse_loss_scale(f.loss_scale)
  if mode == "auto":
    fp16 = compute_dtype == tf.float16 or (device == "npu" and precision_mode in REDUCED_PRECISION_MODES)
    mode = "dynamic" if fp16 else "off"
  if mode == "fixed":
    return mode, value
  return mode, f.loss_scale_init


def _checkpoint_exists(path):
  """A file or folder, or a TF checkpoint prefix (model.ckpt-100 has only model.ckpt-100.index etc. on disk)."""
  if os.path.exists(path):
    return True
  return os.path.isdir(os.path.dirname(path) or ".") and os.path.exists(path + ".index")


def make_plan(f):
  """Checks the flags against the data and the model; returns a RunPlan or raises FlagError.

  A flag left at its default that does not fit the data (iterations_per_loop longer than an epoch, an eval batch
  larger than the test split, a warm-up longer than the run) is adapted and the change is put in `notes`; a value
  the user gave explicitly is refused instead.
  """
  config = _model_config(f)
  try:
    device = device_lib.resolve_device(f.device)
  except ValueError as e:
    raise FlagError(str(e))
  try:
    engine = distributed.resolve_engine(f.distribute, device, f.rank, f.num_ranks)
  except ValueError as e:
    raise FlagError(str(e))
  rank, num_ranks = engine.rank, engine.size
  precision_mode = device_lib.resolve_precision(device, f.precision_mode)
  notes = []

  train_ds = _open(f, "train")
  eval_ds = _open(f, "test") if f.mode != "train" else None
  if eval_ds is not None and eval_ds.num_classes != train_ds.num_classes:
    raise FlagError("the test split of %s has %d classes but the training split %d" %
                    (f.data_dir, eval_ds.num_classes, train_ds.num_classes))

  shard = len(train_ds) // num_ranks
  step_batch = f.train_batch_size * f.accum_steps
  if f.mode != "eval" and step_batch > shard:
    raise FlagError("--train_batch_size=%d%s is larger than this rank's %d training examples" %
                    (f.train_batch_size, " x --accum_steps=%d" % f.accum_steps if f.accum_steps > 1 else "", shard))
  steps_per_epoch = max(1, shard // step_batch)
  eval_batch_size = f.eval_batch_size
  if eval_ds is not None:
    eval_shard = sampling.BatchPlan(len(eval_ds), eval_batch_size, False, f.seed, rank, num_ranks).num_examples
    if eval_batch_size > eval_shard:
      if f["eval_batch_size"].present:
        raise FlagError("--eval_batch_size=%d is larger than the %d examples of the test split (this rank's shard); "
                        "use at most %d" % (eval_batch_size, eval_shard, eval_shard))
      notes.append("eval_batch_size %d -> %d: the test split has %d examples (this rank's shard)" %
                   (eval_batch_size, eval_shard, eval_shard))
      eval_batch_size = eval_shard

  if f.train_steps is not None:
    total = f.train_steps
  else:
    total = int(math.ceil((f.num_epochs if f.num_epochs is not None else DEFAULT_NUM_EPOCHS) * steps_per_epoch))
  iterations = f.iterations_per_loop
  if iterations > steps_per_epoch:
    if f["iterations_per_loop"].present:
      raise FlagError("--iterations_per_loop=%d is larger than an epoch (%d steps of batch %d); use at most %d" %
                      (iterations, steps_per_epoch, step_batch, steps_per_epoch))
    notes.append("iterations_per_loop %d -> %d: an epoch has %d steps of batch %d" %
                 (iterations, steps_per_epoch, steps_per_epoch, step_batch))
    iterations = steps_per_epoch
  in_graph_loop = device != "npu"
  if not in_graph_loop:
    total = _fit_device_loop(f, total, iterations, steps_per_epoch, notes)
  warmup = _lr_warmup_steps(f, steps_per_epoch, total, notes)
  decay_steps = max(1, int(round(f.lr_decay_epochs * steps_per_epoch)))

  compute_dtype = device_lib.compute_dtype(device, precision_mode)
  ls_mode, ls_init = _loss_scale(f, device, precision_mode, compute_dtype)
  if f.mode == "eval" and not f.init_checkpoint and not checkpoints.checkpoint_prefixes(f.model_dir):
    raise FlagError("--mode=eval needs a checkpoint: none in --model_dir=%s and no --init_checkpoint" % f.model_dir)
  if f.init_checkpoint and not _checkpoint_exists(f.init_checkpoint):
    raise FlagError("--init_checkpoint=%s does not exist; give an official .npz or a checkpoint prefix/folder" %
                    f.init_checkpoint)
  lr = f.lr * num_ranks if f.scale_lr_by_ranks else f.lr
  if lr != f.lr:
    notes.append("lr %g -> %g: --scale_lr_by_ranks with %d ranks" % (f.lr, lr, num_ranks))
  if device == "npu" and f.accum_steps > 1 and ls_mode != "off":
    notes.append("loss scale: the trainer's own (an inf/NaN check on the accumulated gradients) instead of "
                 "NPULossScaleOptimizer, which cannot see across micro-batches")
  lean = device_lib.lean_backward_parts(f.lean_backward, compute_dtype)
  model = ModelPlan(config=config, image_size=f.image_size, num_classes=train_ds.num_classes, dropout=f.dropout,
                    drop_path=f.drop_path, kernels=device_lib.resolve_kernels(device, f.kernels), lean_backward=lean,
                    init_checkpoint=f.init_checkpoint or None)
  data = DataPlan(train_ds=train_ds, eval_ds=eval_ds, class_names=list(train_ds.class_names),
                  train_batch_size=f.train_batch_size, accum_steps=f.accum_steps, eval_batch_size=eval_batch_size,
                  augment=_augment(f,
                                   train_ds), mix=_mix(f), workers=usable_cores() if f.workers is None else f.workers,
                  seed=f.seed, max_image_pixels=f.max_image_pixels, input_timeout=f.input_timeout)
  optim = OptimPlan(name=f.optimizer, lr=lr, momentum=f.momentum, weight_decay=f.weight_decay,
                    weight_decay_exempt=f.weight_decay_exempt, layer_decay=f.layer_decay,
                    grad_clip_norm=f.grad_clip_norm, label_smoothing=f.label_smoothing, ema_decay=f.ema_decay)
  schedule = SchedulePlan(kind=f.lr_schedule, total_steps=total, steps_per_epoch=steps_per_epoch, warmup_steps=warmup,
                          decay_value=f.lr_decay_value, decay_steps=decay_steps, iterations=iterations,
                          in_graph_loop=in_graph_loop)
  precision = PrecisionPlan(mode=precision_mode, compute_dtype=compute_dtype, loss_scale_mode=ls_mode,
                            loss_scale_init=ls_init, loss_scale_growth_steps=f.loss_scale_growth_steps)
  dist = DistPlan(engine=engine, rank=rank, num_ranks=num_ranks, allreduce_bucket_mb=f.allreduce_bucket_mb)
  loop = LoopPlan(log_every_loops=f.log_every_loops, eval_every_loops=f.eval_every_loops,
                  save_every_loops=f.save_every_loops, keep_checkpoints=f.keep_checkpoints, warmup_loops=f.warmup_loops,
                  eval_hflip=f.eval_hflip)
  return RunPlan(
      mode=f.mode, device=device, model_dir=f.model_dir, seed=f.seed, model=model, data=data, optim=optim,
      schedule=schedule, precision=precision, debug=_debug(f, device, rank, num_ranks), dist=dist, loop=loop,
      notes=notes, flag_lines=recorded_flags(f, {
          "iterations_per_loop": iterations,
          "eval_batch_size": eval_batch_size,
          "lr_warmup_steps": warmup
      }))


def recorded_flags(f, adapted):
  """The flag lines of flags.txt: every trainer flag with a value, with defaults the plan adapted (`adapted`: name ->
  the value the run uses) replaced, so that --flagfile=flags.txt runs exactly this run."""
  adapted = dict(adapted)
  if f.lr_warmup_epochs is not None or f.lr_warmup_steps is not None:
    adapted.pop("lr_warmup_steps", None)
  lines = []
  for name in trainer_flag_names():
    if name in adapted and adapted[name] != getattr(f, name):
      lines.append("--%s=%s" % (name, adapted[name]))
    elif f[name].value is not None:
      lines.append(f[name].serialize())
  return lines


def _augment(f, train_ds):
  crop = f.augment if f.augment != "auto" else ("none" if train_ds.name == "digits" else "inception")
  hflip = f.hflip if f.hflip is not None else crop != "none"
  return AugmentPlan(crop=crop, padding=f.crop_padding, hflip=hflip, randaugment=f.randaugment,
                     color_jitter=f.color_jitter, random_erasing=f.random_erasing)


def _mix(f):
  if not f.mixup and not f.cutmix:
    return None
  return MixPlan(mixup=f.mixup, cutmix=f.cutmix, prob=f.mixup_prob, switch_prob=f.mixup_switch_prob,
                 off_epoch=f.mixup_off_epoch)


def _debug(f, device, rank, num_ranks):
  """The dump and profile folders, worked out once. On the CPU/GPU each rank writes to a folder of its own."""
  per_rank = (lambda path: os.path.join(path, "rank_%d" % rank)) if num_ranks > 1 and device != "npu" else \
      (lambda path: path)
  over = per_rank(f.over_dump_path or os.path.join(f.model_dir, "overflow")) if f.over_dump else None
  data = per_rank(f.data_dump_path or os.path.join(f.model_dir, "data_dump")) if f.data_dump_flag else None
  npu_dump = os.path.abspath(f.data_dump_path or f.over_dump_path or
                             os.path.join(f.model_dir, "data_dump" if f.data_dump_flag else "overflow"))
  profile = per_rank(os.path.join(f.model_dir, "profile")) if f.profiling else None
  return DebugPlan(over_dump_dir=over, data_dump_dir=data,
                   dump_steps=parse_dump_steps(f.data_dump_step) if f.data_dump_flag else [], npu_dump_dir=npu_dump,
                   profile_dir=profile, profiling_options=f.profiling_options, profiling_steps=f.profiling_steps,
                   fusion_switch_file=f.fusion_switch_file)


def to_json(plan):
  """The plan as plain JSON values (datasets, config and engine described, dtypes by name), for plan.json."""

  def value(v):
    if isinstance(v, tuple) and hasattr(v, "_fields"):
      return collections.OrderedDict((k, value(getattr(v, k))) for k in v._fields)
    if isinstance(v, (list, tuple)):
      return [value(x) for x in v]
    if isinstance(v, tf.DType):
      return v.name
    if v is None or isinstance(v, (bool, int, float, str)):
      return v
    if hasattr(v, "num_classes") and hasattr(v, "split"):  # a Dataset
      return {"name": v.name, "split": v.split, "examples": len(v), "source": v.source}
    if hasattr(v, "name") and hasattr(v, "size"):  # a data-parallel engine
      return v.name
    return str(v)

  out = value(plan)
  out["data"]["class_names"] = len(plan.data.class_names)  # the names themselves are in class_names.txt
  return out


def _fit_device_loop(f, total, iterations, steps_per_epoch, notes):
  """On the NPU every sess.run runs exactly `iterations` steps (Ascend's device loop cannot stop early): the total
  becomes a multiple of it, and evaluation/checkpoints come at the loop ends. Returns the total; notes say so."""
  if total % iterations:
    rounded = -(-total // iterations) * iterations
    notes.append("training steps %d -> %d: on the NPU every sess.run runs --iterations_per_loop=%d steps" %
                 (total, rounded, iterations))
    total = rounded
  per_epoch = [
      what for what, every in (("evaluation", f.eval_every_loops if f.mode == "train_and_eval" else 1),
                               ("checkpoints", f.save_every_loops)) if every == 0
  ]
  if per_epoch and steps_per_epoch % iterations:
    notes.append("%s every epoch: on the NPU at the end of the sess.run that crosses each epoch end (an epoch is %d "
                 "steps, not a multiple of --iterations_per_loop=%d)" %
                 (" and ".join(per_epoch), steps_per_epoch, iterations))
  return total


def _lr_warmup_steps(f, steps_per_epoch, total, notes):
  """The warm-up length in steps. The default (2 epochs) shrinks to a tenth of a run it would cover whole; an
  explicit one that covers the run is kept, with a note that the lr never reaches its peak."""
  if f.lr_warmup_steps is not None:
    warmup, given = f.lr_warmup_steps, "--lr_warmup_steps=%d" % f.lr_warmup_steps
  elif f.lr_warmup_epochs is not None:
    warmup, given = int(round(f.lr_warmup_epochs * steps_per_epoch)), "--lr_warmup_epochs=%g" % f.lr_warmup_epochs
  else:
    warmup = int(round(DEFAULT_LR_WARMUP_EPOCHS * steps_per_epoch))
    if warmup >= total:
      shorter = total // 10
      notes.append("lr warm-up %d -> %d steps: the default %g epochs would cover this whole %d-step run, so the lr "
                   "would never reach --lr=%g" % (warmup, shorter, DEFAULT_LR_WARMUP_EPOCHS, total, f.lr))
      warmup = shorter
    return warmup
  if warmup >= total:
    notes.append("WARNING: %s (%d steps) covers the whole %d-step run: the lr never reaches its peak --lr=%g" %
                 (given, warmup, total, f.lr))
  return warmup


def synthetic_plan(config, image_size, num_classes, batch_size, iterations=1, device="cpu", optimizer="momentum",
                   lr=0.01, momentum=0.9, weight_decay=0.0, total_steps=10**6, schedule="cosine", warmup_steps=0,
                   decay_value=None, decay_steps=None, compute_dtype=tf.float32, loss_scale="off",
                   loss_scale_init=2.0**15, loss_scale_growth_steps=1000, grad_clip_norm=1.0, label_smoothing=0.0,
                   kernels="auto", lean_backward=("auto",), accum_steps=1, in_graph_loop=None, seed=0, **more):
  """A RunPlan for a training graph without datasets or flags (benchmarks and tests): the same record the trainer
  builds, with the trainer's defaults and its resolution of kernels and lean backward for `device` and dtype, so
  that build_training makes exactly the trainer's step. `more` sets other OptimPlan / ModelPlan fields (dropout,
  drop_path, layer_decay, weight_decay_exempt, ema_decay)."""
  model_fields = {k: more.pop(k) for k in ("dropout", "drop_path") if k in more}
  model = ModelPlan(config=config, image_size=image_size, num_classes=num_classes,
                    dropout=model_fields.get("dropout", 0.0), drop_path=model_fields.get("drop_path", 0.0),
                    kernels=device_lib.resolve_kernels(device, kernels),
                    lean_backward=device_lib.lean_backward_parts(list(lean_backward),
                                                                 compute_dtype), init_checkpoint=None)
  optim = OptimPlan(name=optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay,
                    weight_decay_exempt=more.pop("weight_decay_exempt",
                                                 "timm"), layer_decay=more.pop("layer_decay",
                                                                               1.0), grad_clip_norm=grad_clip_norm,
                    label_smoothing=label_smoothing, ema_decay=more.pop("ema_decay", 0.0))
  if more:
    raise TypeError("synthetic_plan: unknown fields %s" % ", ".join(sorted(more)))
  data = DataPlan(train_ds=None, eval_ds=None, class_names=[str(c) for c in range(num_classes)],
                  train_batch_size=batch_size, accum_steps=accum_steps, eval_batch_size=batch_size,
                  augment=AugmentPlan("none", 0, False, "", 0.0,
                                      0.0), mix=None, workers=0, seed=seed, max_image_pixels=None, input_timeout=0.0)
  schedule_plan = SchedulePlan(kind=schedule, total_steps=total_steps, steps_per_epoch=total_steps,
                               warmup_steps=warmup_steps, decay_value=decay_value, decay_steps=decay_steps,
                               iterations=iterations,
                               in_graph_loop=device != "npu" if in_graph_loop is None else in_graph_loop)
  precision = PrecisionPlan(mode="force_fp32" if compute_dtype == tf.float32 else "allow_mix_precision",
                            compute_dtype=compute_dtype, loss_scale_mode=loss_scale, loss_scale_init=loss_scale_init,
                            loss_scale_growth_steps=loss_scale_growth_steps)
  return RunPlan(mode="train", device=device, model_dir="", seed=seed, model=model, data=data, optim=optim,
                 schedule=schedule_plan, precision=precision, debug=DebugPlan(None, None, [], "", None, None, 0, None),
                 dist=DistPlan(engine=None, rank=0, num_ranks=1,
                               allreduce_bucket_mb=None), loop=LoopPlan(1, 0, 0, 1, 0, False), notes=[], flag_lines=[])
