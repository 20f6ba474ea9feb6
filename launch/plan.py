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
from launch.flags import FlagError, parse_dump_steps, parse_loss_scale
from vit_raw import configs

RunPlan = collections.namedtuple("RunPlan", [
    "device", "precision_mode", "compute_dtype", "loss_scale_mode", "loss_scale_init", "config", "image_size",
    "train_ds", "eval_ds", "num_classes", "class_names", "rank", "num_ranks", "steps_per_epoch", "total_steps",
    "warmup_steps", "decay_steps", "iterations", "in_graph_loop", "model_dir", "dump_steps", "eval_steps_per_pass",
    "augment"
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
  rank, num_ranks: this process's data shard.
  steps_per_epoch, total_steps, warmup_steps, decay_steps: step counts (decay_steps: exponential schedule period).
  iterations: steps per sess.run; in_graph_loop: run them in a tf.while_loop (CPU/GPU, one rank).
  model_dir: where everything is written.
  dump_steps: steps whose tensors --data_dump_flag saves.
  eval_steps_per_pass: eval batches in one pass (0 without eval).
  augment: "inception" or "none": the input pipeline's training transform.
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
    fp16 = compute_dtype == tf.float16 or (device == "npu" and precision_mode
                                           in ("allow_mix_precision", "force_fp16", "allow_fp32_to_fp16"))
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
  """Checks the flags against the data and the model; returns a RunPlan or raises FlagError."""
  config = _model_config(f)
  try:
    rank, num_ranks = distributed.rank_and_size(f.rank, f.num_ranks)
  except ValueError as e:
    raise FlagError(str(e))
  try:
    device = device_lib.resolve_device(f.device)
  except ValueError as e:
    raise FlagError(str(e))
  precision_mode = device_lib.resolve_precision(device, f.precision_mode)

  train_ds = _open(f, "train")
  eval_ds = _open(f, "test") if f.mode != "train" else None
  if eval_ds is not None and eval_ds.num_classes != train_ds.num_classes:
    raise FlagError("the test split of %s has %d classes but the training split %d" %
                    (f.data_dir, eval_ds.num_classes, train_ds.num_classes))

  shard = len(train_ds) // num_ranks
  if f.mode != "eval" and f.train_batch_size > shard:
    raise FlagError("--train_batch_size=%d is larger than this rank's %d training examples" %
                    (f.train_batch_size, shard))
  steps_per_epoch = max(1, shard // f.train_batch_size)
  eval_steps = 0
  if eval_ds is not None:
    eval_shard = sampling.BatchPlan(len(eval_ds), f.eval_batch_size, False, f.seed, rank, num_ranks).num_examples
    if f.eval_batch_size > eval_shard:
      raise FlagError("--eval_batch_size=%d is larger than the %d examples of the test split (this rank's shard); "
                      "use at most %d" % (f.eval_batch_size, eval_shard, eval_shard))
    eval_steps = -(-eval_shard // f.eval_batch_size)

  if f.train_steps is not None:
    total = f.train_steps
  else:
    total = int(math.ceil((f.num_epochs if f.num_epochs is not None else 50.0) * steps_per_epoch))
  if f.iterations_per_loop > steps_per_epoch:
    raise FlagError("--iterations_per_loop=%d is larger than an epoch (%d steps of batch %d); use at most %d" %
                    (f.iterations_per_loop, steps_per_epoch, f.train_batch_size, steps_per_epoch))
  if f.lr_warmup_steps is not None:
    warmup = f.lr_warmup_steps
  else:
    warmup = int(round((f.lr_warmup_epochs or 0.0) * steps_per_epoch))
  decay_steps = max(1, int(round(f.lr_decay_epochs * steps_per_epoch)))

  compute_dtype = device_lib.compute_dtype(device, precision_mode)
  ls_mode, ls_init = _loss_scale(f, device, precision_mode, compute_dtype)
  if f.mode == "eval" and not f.init_checkpoint and not tf.train.latest_checkpoint(f.model_dir):
    raise FlagError("--mode=eval needs a checkpoint: none in --model_dir=%s and no --init_checkpoint" % f.model_dir)
  if f.init_checkpoint and not _checkpoint_exists(f.init_checkpoint):
    raise FlagError("--init_checkpoint=%s does not exist; give an official .npz or a checkpoint prefix/folder" %
                    f.init_checkpoint)
  in_graph_loop = device != "npu" and num_ranks == 1
  augment = f.augment if f.augment != "auto" else ("none" if train_ds.name == "digits" else "inception")
  return RunPlan(device=device, precision_mode=precision_mode, compute_dtype=compute_dtype, loss_scale_mode=ls_mode,
                 loss_scale_init=ls_init, config=config, image_size=f.image_size, train_ds=train_ds, eval_ds=eval_ds,
                 num_classes=train_ds.num_classes, class_names=list(train_ds.class_names), rank=rank,
                 num_ranks=num_ranks, steps_per_epoch=steps_per_epoch, total_steps=total, warmup_steps=warmup,
                 decay_steps=decay_steps, iterations=f.iterations_per_loop, in_graph_loop=in_graph_loop,
                 model_dir=f.model_dir, dump_steps=parse_dump_steps(f.data_dump_step) if f.data_dump_flag else [],
                 eval_steps_per_pass=eval_steps, augment=augment)
