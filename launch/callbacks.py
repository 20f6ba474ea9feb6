"""What hangs off the training loop: one small class per concern, each saying when it fires (tensorpack's callbacks).

The loop (launch/train.py) asks every callback where the next sess.run must stop (`stop_at`), which options the
run needs (`run_options`), then hands each the finished loop (`after_loop`); `before_train` and `after_train` frame
the run. Callbacks marked `rank0_only` (checkpoints) act on rank 0 alone, but every rank asks them where loops stop:
with several ranks every rank must run loops of the same lengths, or their collectives would not pair up.
"""
import collections
import math
import os
import time

from absl import logging
import numpy as np

from launch import debugging
from launch import evaluation
from launch import metrics

LoopResult = collections.namedtuple("LoopResult", ["index", "first_step", "step", "steps", "seconds", "fetched"])
LoopResult.__doc__ = """One sess.run of the training op.

Attributes:
  index: 1 for the run's first loop, then 2, 3, ...
  first_step, step: the global step before and after it; steps = step - first_step (the steps the graph ran).
  seconds: wall time of the sess.run (input waits included).
  fetched: the values of the loop's fetches (mean_loss, last_loss, lr, loss_scale, skipped, global_step, ...).
"""


class TrainingStopped(RuntimeError):
  """The run cannot usefully go on (e.g. the loss diverged); the message is the one line the user sees."""


class RunState(object):
  """What the callbacks see of the run.

  Attributes:
    sess, graph, plan, flags: the session, the TrainGraph, the RunPlan and the flags.
    monitors: launch.monitors.Monitors; `put` hands a record to them.
    start_step: the global step this process started at; step: the global step now.
    start_time: time.time() when the run started.
    best_top1: the best top-1 over this run and the runs it resumed (-1 before any evaluation).
    last_eval: the latest evaluation result dict (None before one).
    train_records: the "train" records this process emitted (for its throughput).
  """

  def __init__(self, sess, graph, plan, flags, monitors, start_step, best_top1):
    self.sess, self.graph, self.plan, self.flags, self.monitors = sess, graph, plan, flags, monitors
    self.start_step = self.step = start_step
    self.start_time = time.time()
    self.best_top1 = best_top1
    self.last_eval = None
    self.train_records = []

  def epoch(self, step=None):
    return (self.step if step is None else step) / float(self.plan.steps_per_epoch)

  def put(self, record):
    self.monitors.put(record)


class Callback(object):
  """Does nothing at every point of the loop; subclasses override what they need."""
  rank0_only = False

  def before_train(self, run):
    pass

  def stop_at(self, run):
    """The global step (> run.step) at which the next sess.run must end for this callback to see it, or None."""
    return None

  def run_options(self, run):
    """Extra sess.run keyword arguments for the next loop (e.g. a trace request)."""
    return {}

  def after_loop(self, run, loop):
    pass

  def after_train(self, run):
    pass


class Trigger(object):
  """Fires every `every_loops` loops, or at every epoch end when `every_loops` is 0 (then loops are cut there)."""

  def __init__(self, every_loops, steps_per_epoch):
    self.every_loops, self.steps_per_epoch = every_loops, steps_per_epoch

  def stop_at(self, step):
    if self.every_loops:
      return None
    return (step // self.steps_per_epoch + 1) * self.steps_per_epoch

  def fires(self, loop):
    if self.every_loops:
      return loop.index % self.every_loops == 0
    return loop.step // self.steps_per_epoch > loop.first_step // self.steps_per_epoch


class TrainLogger(Callback):
  """The train records: one per `every_loops` loops (and always for the first and the last loop), with img/s over
  the loops it covers and an ETA from the median step time of the loops after the first."""

  def __init__(self, every_loops, images_per_step, loss_scaling):
    self.every_loops, self.images_per_step, self.loss_scaling = every_loops, images_per_step, loss_scaling
    self._pending = []
    self._step_seconds = []

  def after_loop(self, run, loop):
    self._pending.append(loop)
    if loop.index == 1:
      logging.info(
          "first loop (graph build, optimisation, compile, input start): %.1f s for %d steps; it is left "
          "out of img/s", loop.seconds, loop.steps)
    else:
      self._step_seconds = (self._step_seconds + [loop.seconds / max(loop.steps, 1)])[-50:]
    if loop.index == 1 or loop.index % self.every_loops == 0 or run.step >= run.plan.total_steps:
      self._emit(run)

  def _emit(self, run):
    loops, self._pending = self._pending, []
    steps = sum(l.steps for l in loops)
    seconds = sum(l.seconds for l in loops)
    last = loops[-1].fetched
    per_step = float(np.median(self._step_seconds)) if self._step_seconds else seconds / max(steps, 1)
    record = {
        "event": "train",
        "step": run.step,
        "total": run.plan.total_steps,
        "epoch": run.epoch(),
        "steps": steps,
        "seconds": seconds,
        "images": steps * self.images_per_step,
        "loss": sum(float(l.fetched["mean_loss"]) * l.steps for l in loops) / max(steps, 1),
        "lr": float(last["lr"]),
        "img_per_sec": steps * self.images_per_step / max(seconds, 1e-9),
        "step_ms": 1000.0 * seconds / max(steps, 1),
        "eta_s": (run.plan.total_steps - run.step) * per_step,
        "wall_s": time.time() - run.start_time
    }
    if self.loss_scaling:
      record["loss_scale"], record["skipped"] = float(last["loss_scale"]), int(last["skipped"])
    run.train_records.append(record)
    run.put(record)


class Evaluator(Callback):
  """Evaluates the whole test split on its trigger and at the end; keeps the best top-1 in the graph (so it is
  checkpointed) and in `run.best_top1`."""

  def __init__(self, trigger):
    self.trigger = trigger
    self._evaluated_step = None

  def stop_at(self, run):
    return self.trigger.stop_at(run.step)

  def after_loop(self, run, loop):
    if self.trigger.fires(loop) and run.step < run.plan.total_steps:
      self.evaluate(run)

  def after_train(self, run):
    if self._evaluated_step != run.step:
      self.evaluate(run)

  def evaluate(self, run):
    result = evaluation.evaluate(run.sess, run.graph.eval)
    self._evaluated_step = run.step
    run.last_eval = result
    run.put(dict(result, event="eval", step=run.step, epoch=run.epoch()))
    if result["examples"] and result["top1"] > run.best_top1:
      run.best_top1 = result["top1"]
      run.sess.run(run.graph.set_best, {run.graph.best_input: run.best_top1})
    return result


class CheckpointSaver(Callback):
  """Saves on its trigger and at the end of training."""
  rank0_only = True

  def __init__(self, trigger):
    self.trigger = trigger

  def stop_at(self, run):
    return self.trigger.stop_at(run.step)

  def after_loop(self, run, loop):
    if self.trigger.fires(loop) and run.step < run.plan.total_steps:
      run.graph.checkpoints.save(run.sess, run.step)

  def after_train(self, run):
    run.graph.checkpoints.save(run.sess, run.step)


class Profiler(Callback):
  """CPU/GPU --profiling: Chrome traces of `count` loops, the first ones after the timing warm-up (or the last loops
  of a run too short for that; never the first loop, which builds the graph)."""

  def __init__(self, out_dir, warmup_steps, count):
    self.out_dir, self.warmup_steps, self.count = out_dir, warmup_steps, count
    self.trace = None
    self._kwargs = {}
    self._loop_index = 1

  def before_train(self, run):
    loops_left = -(-(run.plan.total_steps - run.step) // run.plan.iterations)
    first = min(1 + -(-self.warmup_steps // run.plan.iterations), max(2, loops_left - self.count + 1))
    self.trace = debugging.ChromeTrace(self.out_dir, first, self.count)

  def run_options(self, run):
    self._kwargs = self.trace.run_kwargs(self._loop_index)
    return self._kwargs

  def after_loop(self, run, loop):
    self._loop_index = loop.index + 1
    self.trace.write(self._kwargs, run.step)

  def after_train(self, run):
    if self.trace.files:
      logging.info("profiling: %d Chrome traces in %s", len(self.trace.files), self.trace.out_dir)


class DebugDumps(Callback):
  """CPU/GPU --over_dump and --data_dump_flag: re-runs the loop's last batch through the debug probe (the NPU
  adapter does both itself). Loops are cut right after each dump step."""

  def __init__(self, probe, over_dump_dir, data_dump_dir, dump_steps, max_overflow_reports=3):
    self.probe, self.over_dump_dir, self.data_dump_dir = probe, over_dump_dir, data_dump_dir
    self.dump_steps = sorted(dump_steps)
    self._reports_left = max_overflow_reports
    self._skipped = None

  def stop_at(self, run):
    later = [s + 1 for s in self.dump_steps if s >= run.step]
    return later[0] if later else None

  def after_loop(self, run, loop):
    out = loop.fetched
    skipped = int(out["skipped"])
    overflowed = (self._skipped is not None and skipped > self._skipped) or not np.isfinite(out["last_loss"])
    self._skipped = skipped
    if self.over_dump_dir and overflowed and self._reports_left > 0:
      self._reports_left -= 1
      self.probe.report_overflow(run.sess, out["last_images"], out["last_labels"], self.over_dump_dir, run.step)
    if self.data_dump_dir and (run.step - 1) in self.dump_steps:
      self.probe.dump(run.sess, out["last_images"], out["last_labels"], self.data_dump_dir, run.step - 1)


class NanGuard(Callback):
  """Stops the run when the loss is not finite: at once without loss scaling; with it (where a skipped overflow
  step is normal) after `patience` loops in a row."""

  def __init__(self, loss_scaling, patience=3):
    self.patience = patience if loss_scaling else 1
    self._bad = 0

  def after_loop(self, run, loop):
    loss = float(loop.fetched["mean_loss"])
    self._bad = 0 if math.isfinite(loss) else self._bad + 1
    if self._bad >= self.patience:
      raise TrainingStopped("the training loss is %s at step %d: the weights diverged; lower --lr, keep "
                            "--grad_clip_norm, or find the op with --over_dump (checkpoints up to step %s are "
                            "intact)" % (loss, run.step, run.graph.checkpoints.last_saved_step))


def make_callbacks(f, plan, graph, timing_warmup_steps):
  """The callbacks of a training run, in the order they see each loop (logging and dumps before the NaN guard,
  which comes before evaluation and checkpoints so that a diverged loop is never saved)."""
  loss_scaling = plan.loss_scale_mode != "off"
  # Throughput counts every rank's images: the global batch of a step.
  global_batch = plan.train_batch_size * plan.accum_steps * plan.num_ranks
  callbacks = [TrainLogger(f.log_every_loops, global_batch, loss_scaling)]
  # Each rank's traces and dumps in a folder of its own.
  per_rank = (lambda path: os.path.join(path, "rank_%d" % plan.rank)) if plan.num_ranks > 1 else (lambda path: path)
  if f.profiling and plan.device != "npu":
    callbacks.append(Profiler(per_rank(os.path.join(plan.model_dir, "profile")), timing_warmup_steps,
                              f.profiling_steps))
  if graph.probe is not None:
    callbacks.append(
        DebugDumps(graph.probe, f.over_dump and per_rank(f.over_dump_path or os.path.join(plan.model_dir, "overflow")),
                   f.data_dump_flag and per_rank(f.data_dump_path or os.path.join(plan.model_dir, "data_dump")),
                   plan.dump_steps))
  callbacks.append(NanGuard(loss_scaling))
  if f.mode == "train_and_eval":
    callbacks.append(Evaluator(Trigger(f.eval_every_loops, plan.steps_per_epoch)))
  callbacks.append(CheckpointSaver(Trigger(f.save_every_loops, plan.steps_per_epoch)))
  return callbacks


def acting(callbacks, rank):
  """The callbacks that act on `rank` (rank0_only ones only on rank 0)."""
  return [c for c in callbacks if rank == 0 or not c.rank0_only]


def timing_warmup_steps(f, plan):
  """Loops ending within this many steps of the run's start are left out of img/s (launch.metrics): the first
  loop and --warmup_loops more, or the first 50 steps."""
  return (1 + f.warmup_loops) * plan.iterations if f.warmup_loops else metrics.DEFAULT_WARMUP_STEPS
