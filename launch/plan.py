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
from launch import device as device_lib
from launch import distributed
from launch.flags import (DEFAULT_LR_WARMUP_EPOCHS, DEFAULT_NUM_EPOCHS, REDUCED_PRECISION_MODES, FlagError,
                          parse_dump_steps, parse_loss_scale)
from vit_raw import configs

RunPlan = collections.namedtuple("RunPlan", [
    "device", "precision_mode", "compute_dtype", "loss_scale_mode", "loss_scale_init", "config", "image_size",
    "train_ds", "eval_ds", "num_classes", "class_names", "rank", "num_ranks", "steps_per_epoch", "total_steps",
    "lr_warmup_steps", "decay_steps", "iterations", "in_graph_loop", "model_dir", "dump_steps", "augment",
    "train_batch_size", "eval_batch_size", "notes", "engine", "accum_steps", "lr"
])
RunPlan.__doc__ = """A checked run.

Attributes:
  device: "npu" | "gpu" | "cpu".
  precision_mode: the resolved --precision_mode (never "auto").
  compute_dtype: the model's compute dtype on this device (tf.float32/float16/bfloat16).
  loss_scale_mode, loss_scale_init: "dynamic" | "fixed" | "off" and the initial (or fixed) scale.
  config: the vit_raw ViTConfig (with any shape overrides).
  image_size: side of the model input.
  train_ds, eval_ds: input Datasets (eval_ds None in --mode=train).
  num_classes, class_names: from the training split.
  rank, num_ranks: this process's data shard and rank (from `engine`).
  engine: the data-parallel engine (launch.engines): single, horovod, collective or hccl.
  accum_steps: micro-batches per optimizer step; a step consumes train_batch_size x accum_steps x num_ranks images.
  lr: the peak learning rate (--lr, times num_ranks with --scale_lr_by_ranks).
  steps_per_epoch, total_steps: optimizer step counts of the whole run (not only what is left of it); on the NPU
    total_steps is a multiple of iterations.
  lr_warmup_steps, decay_steps: the schedule's warm-up length and the exponential schedule's period, in steps.
  iterations: steps per sess.run; in_graph_loop: run them in a tf.while_loop (CPU/GPU; the NPU repeats the graph).
  model_dir: where everything is written.
  dump_steps: steps whose tensors --data_dump_flag saves.
  augment: "inception" or "none": the input pipeline's training transform.
  train_batch_size, eval_batch_size: per rank, after defaults were fitted to the data.
  notes: lines to log once: defaults that were adapted to this run, and schedule warnings.
"""


def _model_config(f):
  try:
    config = configs.get_config(f.model, **{k: getattr(f, k) for k in configs.SHAPE_FIELDS})
  except ValueError as e:
    raise FlagError("--model: %s" % e)
  if f.image_size % config.patch_size:
    raise FlagError("--image_size=%d is not divisible by the patch size %d of %s; use a multiple of %d" %
                    (f.image_size, config.patch_size, config.name, config.patch_size))
  return config


def _open(f, split):
  name = f.dataset or ("auto" if f.data_dir else "digits")
  try:
    return datasets.open_dataset(name, f.data_dir, split)
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
  if f.mode == "eval" and not f.init_checkpoint and not tf.train.latest_checkpoint(f.model_dir):
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
  augment = f.augment if f.augment != "auto" else ("none" if train_ds.name == "digits" else "inception")
  return RunPlan(device=device, precision_mode=precision_mode, compute_dtype=compute_dtype, loss_scale_mode=ls_mode,
                 loss_scale_init=ls_init, config=config, image_size=f.image_size, train_ds=train_ds, eval_ds=eval_ds,
                 num_classes=train_ds.num_classes, class_names=list(train_ds.class_names), rank=rank,
                 num_ranks=num_ranks, steps_per_epoch=steps_per_epoch, total_steps=total, lr_warmup_steps=warmup,
                 decay_steps=decay_steps, iterations=iterations, in_graph_loop=in_graph_loop, model_dir=f.model_dir,
                 dump_steps=parse_dump_steps(f.data_dump_step) if f.data_dump_flag else [], augment=augment,
                 train_batch_size=f.train_batch_size, eval_batch_size=eval_batch_size, notes=notes, engine=engine,
                 accum_steps=f.accum_steps, lr=lr)


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
