"""python -m launch.train: trains (and evaluates) a ViT in TensorFlow graph mode on the NPU, a GPU or the CPU.

With no flags it trains the digits recipe (a 4-layer ViT with 4x4 patches on the embedded 8x8 digits upscaled to
16x16) and evaluates it every epoch. `--helpfull` lists every flag; the log line format is in launch/log_format.py.

The loop, top to bottom: plan (flags -> checked RunPlan) -> graph (variables, optimizer, input, N-step train op,
eval) -> session (initialise, restore or load --init_checkpoint) -> loop over sess.run -> log -> eval ->
checkpoint -> closing summary.
"""
import os
import sys
import time

# TensorFlow's C++ start-up INFO lines would bury a one-line usage error; warnings and errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tensorflow.compat.v1 as tf

from input.pipeline import InputPipeline
from input.preprocess import to_model_input
from launch import debugging
from launch import device as device_lib
from launch import distributed
from launch import evaluation
from launch import hooks
from launch import log_format
from launch import loss_scale as loss_scale_lib
from launch import npu
from launch import optimizers
from launch import run_record
from launch import schedules
from launch import train_graph
from launch.flags import FlagError, check_flags, define_flags, trainer_flag_names
from launch.plan import make_plan
from vit_raw import checkpoint as vit_checkpoint
from vit_raw.model import vit

define_flags()
FLAGS = flags.FLAGS


def make_model_fn(plan, dropout):
  """fn(images uint8, is_training) -> float32 logits: [-1, 1] scaling in the compute dtype, then the ViT."""

  def model_fn(images, is_training):
    return vit(to_model_input(images, plan.compute_dtype), plan.config, plan.num_classes, is_training,
               dropout_rate=dropout, compute_dtype=plan.compute_dtype)

  return model_fn


def build_graph(f, plan, start_step, restoring):
  """Builds every op of the run in the default graph; returns a dict of the pieces the loop uses."""
  tf.set_random_seed(f.seed)
  model_fn = make_model_fn(plan, f.dropout)
  size = plan.image_size
  # Variables first, from a dummy batch, so their initial values never depend on what is built after them.
  train_graph.forward_with_reads(model_fn, tf.zeros([1, size, size, 3], tf.uint8), False, record=False)
  g = {"model_fn": model_fn}
  g["init_fn"] = None
  if f.init_checkpoint and not restoring:
    try:
      g["init_fn"] = vit_checkpoint.init_from_checkpoint(f.init_checkpoint, plan.config, plan.num_classes, size)
    except ValueError as e:
      raise FlagError("--init_checkpoint: %s" % e)
  global_step = tf.get_variable("global_step", [], tf.int64, tf.zeros_initializer(), trainable=False, use_resource=True)
  tf.add_to_collection(tf.GraphKeys.GLOBAL_STEP, global_step)
  with tf.variable_scope("run", use_resource=True):
    g["best_top1"] = tf.get_variable("best_top1", [], tf.float32, tf.constant_initializer(-1.0), trainable=False)
  g["best_input"] = tf.placeholder(tf.float32, [])
  g["set_best"] = g["best_top1"].assign(g["best_input"], read_value=False)

  if f.mode != "eval":
    npu_scaling = plan.device == "npu" and plan.loss_scale_mode != "off"
    loss_scale = loss_scale_lib.LossScale("off" if npu_scaling else plan.loss_scale_mode, plan.loss_scale_init,
                                          f.loss_scale_growth_steps)
    lr_holder = train_graph.learning_rate_holder()
    optimizer = optimizers.make_optimizer(f.optimizer, lr_holder, f.momentum, f.weight_decay)
    optimizer = distributed.wrap_optimizer(optimizer, plan.device, plan.num_ranks)
    if npu_scaling:
      optimizer = npu.loss_scale_optimizer(optimizer, plan.loss_scale_mode, plan.loss_scale_init,
                                           f.loss_scale_growth_steps, is_distributed=plan.num_ranks > 1)

    def lr_fn(step):
      return schedules.learning_rate(step, f.lr, plan.total_steps, f.lr_schedule, plan.warmup_steps, f.lr_decay_value,
                                     plan.decay_steps)

    g["train_pipe"] = InputPipeline(plan.train_ds, size, f.train_batch_size, True, workers=f.workers, seed=f.seed,
                                    rank=plan.rank, num_ranks=plan.num_ranks, start_batch=start_step,
                                    augment=plan.augment)
    g["train_iterator"] = tf.data.make_initializable_iterator(g["train_pipe"].tf_dataset())
    source = train_graph.BatchSource(g["train_iterator"])
    spec = train_graph.StepSpec(model_fn=model_fn, num_classes=plan.num_classes, optimizer=optimizer,
                                lr_holder=lr_holder, learning_rate_fn=lr_fn, global_step=global_step,
                                loss_scale=loss_scale, grad_clip_norm=f.grad_clip_norm,
                                label_smoothing=f.label_smoothing,
                                l2_fn=lambda variables: optimizers.l2_penalty(variables, f.weight_decay, f.optimizer),
                                optimizer_gradients=not plan.in_graph_loop)
    debug_probe = plan.device != "npu" and (f.over_dump or f.data_dump_flag)
    g["loop"] = train_graph.build_train_loop(spec, source, plan.iterations, plan.in_graph_loop,
                                             keep_last_batch=debug_probe)
    if npu_scaling and npu.loss_scale_of(optimizer) is not None:
      g["loop"].fetches["loss_scale"] = npu.loss_scale_of(optimizer)  # log npu_bridge's scale, not ours (off)
    g["probe"] = debugging.Probe(model_fn, plan.num_classes, source.shapes, f.label_smoothing) if debug_probe \
        else None
  if plan.eval_ds is not None:
    g["eval_pipe"] = InputPipeline(plan.eval_ds, size, f.eval_batch_size, False, workers=f.workers, seed=f.seed,
                                   rank=plan.rank, num_ranks=plan.num_ranks)
    g["eval"] = evaluation.build_eval(g["eval_pipe"], lambda images: model_fn(images, False))
  g["checkpoints"] = hooks.Checkpoints(plan.model_dir, f.keep_checkpoints)
  return g


def session_config(f, plan):
  if plan.device != "npu":
    return device_lib.session_config(plan.device)
  profile_dir = os.path.abspath(os.path.join(plan.model_dir, "profile"))
  return npu.session_config(
      device_lib.session_config("npu"), plan.precision_mode, plan.iterations, over_dump=f.over_dump,
      over_dump_path=os.path.abspath(f.over_dump_path or os.path.join(plan.model_dir, "overflow")),
      data_dump=f.data_dump_flag, data_dump_path=os.path.abspath(f.data_dump_path or
                                                                 os.path.join(plan.model_dir, "data_dump")),
      data_dump_steps=plan.dump_steps, profiling=f.profiling, profiling_options=f.profiling_options or
      npu.default_profiling_options(profile_dir), fusion_switch_file=f.fusion_switch_file)


def run_eval(sess, g, epoch, step, best):
  """Evaluates, logs the eval line, records the best top-1; returns (result dict, new best)."""
  result = evaluation.evaluate(sess, g["eval"])
  logging.info(log_format.EVAL.format(epoch=epoch, step=step, **result))
  if result["top1"] > best:
    best = result["top1"]
    sess.run(g["set_best"], {g["best_input"]: best})
  return result, best


def next_stop(step, plan, per_epoch_events):
  """Steps to run in the next sess.run: N, cut at the end of training, at epoch ends when evaluation or
  checkpoints happen per epoch, and right after a data-dump step (CPU/GPU only: the NPU loop length is fixed)."""
  n = min(plan.iterations, plan.total_steps - step)
  if not plan.in_graph_loop:
    return plan.iterations
  if per_epoch_events:
    n = min(n, plan.steps_per_epoch - step % plan.steps_per_epoch)
  for s in plan.dump_steps:
    if s >= step:
      n = min(n, s + 1 - step)
  return max(1, n)


def train(f, plan):
  wall_start = time.time()
  latest = tf.train.latest_checkpoint(plan.model_dir)
  start_step = hooks.step_of_checkpoint(latest)
  g = build_graph(f, plan, start_step, restoring=latest is not None)
  summaries = hooks.Summaries(plan.model_dir, tf.get_default_graph())
  loop = g.get("loop")
  batch = f.train_batch_size
  warmup_steps = f.warmup_loops * plan.iterations if f.warmup_loops else max(50, plan.iterations)
  throughput = hooks.Throughput(batch, warmup_steps)
  trace = debugging.ChromeTrace(os.path.join(plan.model_dir, "profile"),
                                first=-(-warmup_steps // plan.iterations), count=f.profiling_steps) \
      if f.profiling and plan.device != "npu" else None
  dump_dir = f.data_dump_path or os.path.join(plan.model_dir, "data_dump")
  overflow_dir = f.over_dump_path or os.path.join(plan.model_dir, "overflow")
  per_epoch_eval = f.mode == "train_and_eval" and not f.eval_every_loops
  per_epoch_save = not f.save_every_loops

  with tf.Session(config=session_config(f, plan)) as sess:
    sess.run(tf.global_variables_initializer())
    if latest:
      g["checkpoints"].restore(sess, latest)
      logging.info("resumed from %s at step %d (epoch %.2f)", latest, start_step, start_step / plan.steps_per_epoch)
    elif g["init_fn"] is not None:
      g["init_fn"](sess)
    best = float(sess.run(g["best_top1"]))
    result = {"top1": float("nan"), "top5": float("nan"), "examples": 0}
    if f.mode == "eval":
      result, best = run_eval(sess, g, start_step / plan.steps_per_epoch, start_step, best)
      return summary(result, best, float("nan"), 0.0, time.time() - wall_start, start_step)

    sess.run(g["train_iterator"].initializer)
    fetches = dict(loop.fetches)
    if plan.device == "npu":
      fetches["update"] = npu.set_iterations_per_loop(sess, fetches["update"], plan.iterations)
    step, loop_index, last = start_step, 0, {"mean_loss": float("nan"), "skipped": 0}
    overflow_reports = 0
    while step < plan.total_steps:
      n = next_stop(step, plan, per_epoch_eval or per_epoch_save)
      feed = {loop.iterations: n} if plan.in_graph_loop else None
      run_kwargs = trace.run_kwargs(loop_index) if trace else {}
      throughput.start()
      out = sess.run(fetches, feed_dict=feed, **run_kwargs)
      ips, step_ms = throughput.stop(n)
      previous_step, step, loop_index = step, step + n, loop_index + 1
      if trace:
        trace.write(run_kwargs, step)
      epoch = step / plan.steps_per_epoch
      if loop_index % f.log_every_loops == 0 or step >= plan.total_steps:
        logging.info(
            hooks.train_line(epoch, step, plan.total_steps, out["mean_loss"], out["lr"], ips, step_ms,
                             out["loss_scale"], out["skipped"], throughput.eta(plan.total_steps - step)))
      summaries.scalars(step, loss=out["mean_loss"], lr=out["lr"], loss_scale=out["loss_scale"],
                        skipped_steps=out["skipped"], images_per_sec=ips)
      overflowed = out["skipped"] > last["skipped"] or not np.isfinite(out["last_loss"])
      if g["probe"] is not None and f.over_dump and overflowed and overflow_reports < 3:
        overflow_reports += 1
        g["probe"].report_overflow(sess, out["last_images"], out["last_labels"], overflow_dir, step)
      if g["probe"] is not None and f.data_dump_flag and (step - 1) in plan.dump_steps:
        g["probe"].dump(sess, out["last_images"], out["last_labels"], dump_dir, step - 1)
      last = out

      crossed_epoch = step // plan.steps_per_epoch > previous_step // plan.steps_per_epoch
      done = step >= plan.total_steps
      if f.mode == "train_and_eval" and not done and ((per_epoch_eval and crossed_epoch) or
                                                      (f.eval_every_loops and loop_index % f.eval_every_loops == 0)):
        result, best = run_eval(sess, g, epoch, step, best)
        summaries.scalars(step, top1=result["top1"], top5=result["top5"])
      if not done and ((per_epoch_save and crossed_epoch) or
                       (f.save_every_loops and loop_index % f.save_every_loops == 0)):
        g["checkpoints"].save(sess, step)

    if f.mode == "train_and_eval":
      result, best = run_eval(sess, g, step / plan.steps_per_epoch, step, best)
      summaries.scalars(step, top1=result["top1"], top5=result["top5"])
    g["checkpoints"].save(sess, step)
  summaries.close()
  for key in ("train_pipe", "eval_pipe"):
    if key in g:
      g[key].close()
  if trace and trace.files:
    logging.info("profiling: %d Chrome traces in %s", len(trace.files), trace.out_dir)
  return summary(result, best, last["mean_loss"], throughput.mean_ips(), time.time() - wall_start, step)


def summary(result, best, final_loss, mean_ips, wall, steps):
  if np.isfinite(result["top1"]):
    best = max(best, result["top1"])
  if best < 0:  # the stored best starts at -1: nothing was evaluated in this run or before it
    best = float("nan")
  line = log_format.SUMMARY.format(final_top1=result["top1"], best_top1=best, final_top5=result["top5"],
                                   final_loss=final_loss, mean_ips=mean_ips, wall=wall, steps=steps)
  logging.info(line)
  return result


def describe(plan, f):
  """One line naming what this run does."""
  return ("run: %s on %s (%s, %s compute, loss scale %s) | %s %d classes, %d train / %s test | image %d, "
          "batch %d, %d steps (%d per epoch), %d per loop%s | %s lr %g %s, warm-up %d | rank %d of %d" %
          (plan.config.name, plan.device, plan.precision_mode, tf.as_dtype(
              plan.compute_dtype).name, plan.loss_scale_mode, plan.train_ds.name, plan.num_classes, len(plan.train_ds),
           len(plan.eval_ds) if plan.eval_ds is not None else "-", plan.image_size, f.train_batch_size,
           plan.total_steps, plan.steps_per_epoch, plan.iterations, " (in-graph loop)" if plan.in_graph_loop else "",
           f.optimizer, f.lr, f.lr_schedule, plan.warmup_steps, plan.rank, plan.num_ranks))


def run(f):
  """Checks the flags, then trains and/or evaluates; returns the last eval result. Raises FlagError before any
  work for a bad command line."""
  check_flags(f)
  plan = make_plan(f)
  handler = hooks.log_to_file(plan.model_dir)
  try:
    run_record.write_class_names(plan.model_dir, plan.class_names)
    run_record.write_flags(plan.model_dir, f, trainer_flag_names())
    logging.info(describe(plan, f))
    return train(f, plan)
  finally:
    logging.get_absl_logger().removeHandler(handler)
    handler.close()


def main(argv):
  del argv
  try:
    run(FLAGS)
  except FlagError as e:
    fail(str(e))


def fail(message):
  """The one line a user sees for a bad command line; exit code 2 as for any usage error."""
  sys.stderr.write("launch.train: error: %s\n" % message)
  sys.stderr.flush()
  sys.exit(2)


def parse_flags(argv):
  """absl's parser, but a bad or unknown flag is one line and exit code 2 (absl alone prints usage and exits 1)."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    fail(str(e))


if __name__ == "__main__":
  # TF's own Python deprecation notices go to its logger, not to our log lines; keep only its errors.
  tf.get_logger().setLevel("ERROR")
  tf.disable_v2_behavior()
  app.run(main, flags_parser=parse_flags)
