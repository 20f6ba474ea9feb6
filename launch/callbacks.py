"""What hangs off the training loop: one small class per concern, each saying when it fires (tensorpack's callbacks).

Each callback builds its own graph pieces: `step_hooks` (ops run after every training step, inside the in-graph
loop: the weights' EMA) and `setup_graph` (its own ops once the training graph exists: the evaluation, the debug
probe). The loop (launch/train.py) asks every callback where the next sess.run must stop (`stop_at`), which
options and extra fetches the run needs (`run_options`, `fetches`), then hands each the finished loop (`after_loop`);
`before_train` and `after_train` (in a `finally`, so an interrupted run still gets it) frame the run. Callbacks
marked `rank0_only` (checkpoints) act on rank 0 alone, but every rank asks them where loops stop: with several
ranks every rank must run loops of the same lengths, or their collectives would not pair up.
"""
import collections
import math
import time

from absl import logging
import numpy as np

from input.pipeline import InputPipeline
from launch import debugging
from launch import errors
from launch import evaluation
from launch import metrics
from launch import storage

LoopResult = collections.namedtuple("LoopResult", ["index", "first_step", "step", "steps", "seconds", "values"])
LoopResult.__doc__ = """One sess.run of the training op.

Attributes:
  index: 1 for the run's first loop, then 2, 3, ...
  first_step, step: the global step before and after it; steps = step - first_step (the steps the graph ran).
  seconds: wall time of the sess.run (input waits included).
  values: a launch.train_graph.LoopValues (mean_loss, last_loss, lr, loss_scale, skipped, global_step, ...,
    extra: the callbacks' own fetches by name).
"""


class GraphContext(object):
  """What a callback's setup_graph may use.

  Attributes:
    plan: the RunPlan.
    parallel: the data-parallel seam (launch.distributed.DataParallel).
    model_fn: fn(images uint8, is_training) -> logits (launch.train_graph.make_model_fn).
    training: the launch.train_graph.Training (None in --mode=eval).
    best: the BestTop1 record (the checkpointed best accuracy).
    eval_views: OrderedDict name -> fn(images) -> logits that the evaluation reports ("" = the trained weights);
      a callback may add one (the EMA adds "ema").
    pipelines: the input pipelines built so far (the trainer closes them and reports their failures).
  """

  def __init__(self, plan, parallel, model_fn, training, best, pipelines):
    self.plan, self.parallel, self.model_fn, self.training, self.best = plan, parallel, model_fn, training, best
    self.eval_views = collections.OrderedDict([("", lambda images: model_fn(images, False))])
    self.pipelines = pipelines


BestTop1 = collections.namedtuple("BestTop1", ["variable", "value", "assign"])
BestTop1.__doc__ = """The best top-1 of the run, kept in the graph so that checkpoints carry it.

Attributes:
  variable: float32 variable run/best_top1 (-1 before any evaluation); value: its placeholder; assign: the op
    setting it to the placeholder.
"""

TrainingStopped = errors.RunStopped  # the run cannot usefully go on (launch/errors.py)


class RunState(object):
  """What the callbacks see of the run.

  Attributes:
    sess, graph, plan: the session, the TrainGraph and the RunPlan.
    monitors: launch.monitors.Monitors; `put` hands a record to them.
    start_step: the global step this process started at; step: the global step now.
    start_time: time.time() when the run started.
    best_top1: the best top-1 over this run and the runs it resumed (-1 before any evaluation).
    last_eval: the latest evaluation result dict (None before one).
    train_records: the "train" records this process emitted (for its throughput).
    failure: the exception that is ending the loop (None while it runs, and after a normal end); after_train
      sees it, and the callbacks that write results (checkpoints, evaluation) do nothing then.
    interrupted: the interrupts.Interrupted of a run stopped by a signal (not a failure: checkpoints are written,
      the final evaluation is left for the resumed run).
  """

  def __init__(self, sess, graph, plan, monitors, start_step, best_top1):
    self.sess, self.graph, self.plan, self.monitors = sess, graph, plan, monitors
    self.start_step = self.step = start_step
    self.start_time = time.time()
    self.best_top1 = best_top1
    self.last_eval = None
    self.train_records = []
    self.failure = None
    self.interrupted = None

  def epoch(self, step=None):
    return (self.step if step is None else step) / float(self.plan.schedule.steps_per_epoch)

  def put(self, record):
    self.monitors.put(record)


class Callback(object):
  """Does nothing at every point of the loop; subclasses override what they need."""
  rank0_only = False

  def step_hooks(self, plan):
    """fns(update op) -> op to run after every training step's update (inside the in-graph loop)."""
    return []

  def setup_graph(self, ctx):
    """Builds this callback's own ops (ctx: a GraphContext)."""

  def fetches(self):
    """{name: tensor} to fetch with every loop; the values come back in loop.values.extra."""
    return {}

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
    if loop.index == 1 or loop.index % self.every_loops == 0 or run.step >= run.plan.schedule.total_steps:
      self._emit(run)

  def _emit(self, run):
    loops, self._pending = self._pending, []
    steps = sum(l.steps for l in loops)
    seconds = sum(l.seconds for l in loops)
    last = loops[-1].values
    per_step = float(np.median(self._step_seconds)) if self._step_seconds else seconds / max(steps, 1)
    record = {
        "event": "train",
        "step": run.step,
        "total": run.plan.schedule.total_steps,
        "epoch": run.epoch(),
        "steps": steps,
        "seconds": seconds,
        "images": steps * self.images_per_step,
        "loss": sum(float(l.values.mean_loss) * l.steps for l in loops) / max(steps, 1),
        "lr": float(last.lr),
        "img_per_sec": steps * self.images_per_step / max(seconds, 1e-9),
        "step_ms": 1000.0 * seconds / max(steps, 1),
        "eta_s": (run.plan.schedule.total_steps - run.step) * per_step,
        "wall_s": time.time() - run.start_time
    }
    if self.loss_scaling:
      record["loss_scale"], record["skipped"] = float(last.loss_scale), int(last.skipped)
    run.train_records.append(record)
    run.put(record)


class Evaluator(Callback):
  """Evaluates the whole test split on its trigger and at the end, every view of the weights in one pass (the EMA's
  too); keeps the best top-1 of the trained weights in the graph (so it is checkpointed) and in `run.best_top1`.
  Builds the eval pipeline and graph itself."""

  def __init__(self, trigger, hflip=False):
    self.trigger, self.hflip = trigger, hflip
    self.pipeline = self.graph = None
    self._best = None
    self._evaluated_step = None

  def setup_graph(self, ctx):
    plan, data = ctx.plan, ctx.plan.data
    self.pipeline = InputPipeline(data.eval_ds, plan.model.image_size, data.eval_batch_size, False,
                                  workers=data.workers, seed=data.seed, rank=plan.dist.rank,
                                  num_ranks=plan.dist.num_ranks, max_pixels=data.max_image_pixels,
                                  stall_seconds=data.input_timeout)
    ctx.pipelines.append(self.pipeline)
    self.graph = evaluation.build_eval(self.pipeline, ctx.eval_views, ctx.parallel.allreduce_sum, hflip=self.hflip)
    self._best = ctx.best

  def stop_at(self, run):
    return self.trigger.stop_at(run.step)

  def after_loop(self, run, loop):
    if self.trigger.fires(loop) and run.step < run.plan.schedule.total_steps:
      self.evaluate(run)

  def after_train(self, run):
    if run.failure is None and run.interrupted is None and self._evaluated_step != run.step:
      self.evaluate(run)

  def evaluate(self, run):
    result = evaluation.evaluate(run.sess, self.graph)
    self._evaluated_step = run.step
    run.last_eval = result
    run.put(dict(result, event="eval", step=run.step, epoch=run.epoch()))
    if result["examples"] and result["top1"] > run.best_top1:
      run.best_top1 = result["top1"]
      run.sess.run(self._best.assign, {self._best.value: run.best_top1})
    return result


class CheckpointSaver(Callback):
  """Saves the run's checkpoints (every global variable: run.graph.checkpoints) on its trigger and at the end."""
  rank0_only = True

  def __init__(self, trigger):
    self.trigger = trigger

  def stop_at(self, run):
    return self.trigger.stop_at(run.step)

  def after_loop(self, run, loop):
    if self.trigger.fires(loop) and run.step < run.plan.schedule.total_steps:
      run.graph.checkpoints.save(run.sess, run.step)

  def after_train(self, run):
    if run.failure is None:  # never a checkpoint of a diverged or failing loop
      run.graph.checkpoints.save(run.sess, run.step)


class StorageGuard(Callback):
  """After every loop (rank 0): stops the run (launch.storage.StorageFailed, one line) when the run folder vanished
  or train.log could not be written; the files a run keeps open would otherwise go on being written into nothing,
  or not at all, for the rest of the run. Comes before the checkpoint saver, which then writes nothing."""
  rank0_only = True

  def __init__(self, model_dir):
    self.watch = storage.FolderWatch(model_dir)

  def after_loop(self, run, loop):
    self.watch.check(run.step, run.graph.checkpoints.last_saved_path)
    run.monitors.check()


class Profiler(Callback):
  """CPU/GPU --profiling: Chrome traces of `count` loops, the first ones after the timing warm-up (or the last loops
  of a run too short for that; never the first loop, which builds the graph)."""

  def __init__(self, out_dir, warmup_steps, count):
    self.out_dir, self.warmup_steps, self.count = out_dir, warmup_steps, count
    self.trace = None
    self._kwargs = {}
    self._loop_index = 1

  def before_train(self, run):
    iterations = run.plan.schedule.iterations
    loops_left = -(-(run.plan.schedule.total_steps - run.step) // iterations)
    first = min(1 + -(-self.warmup_steps // iterations), max(2, loops_left - self.count + 1))
    self.trace = debugging.ChromeTrace(self.out_dir, first, self.count)

  def run_options(self, run):
    self._kwargs = self.trace.run_kwargs(self._loop_index)
    return self._kwargs

  def after_loop(self, run, loop):
    self._loop_index = loop.index + 1
    self.trace.write(self._kwargs, run.step)

  def after_train(self, run):
    if self.trace is not None and self.trace.files:
      logging.info("profiling: %d Chrome traces in %s", len(self.trace.files), self.trace.out_dir)


class DebugDumps(Callback):
  """CPU/GPU --over_dump and --data_dump_flag: re-runs the loop's last batch through the debug probe it builds (the
  NPU adapter does both itself). Loops are cut right after each dump step."""

  def __init__(self, over_dump_dir, data_dump_dir, dump_steps, max_overflow_reports=3):
    self.over_dump_dir, self.data_dump_dir = over_dump_dir, data_dump_dir
    self.dump_steps = sorted(dump_steps)
    self.probe = None
    self._reports_left = max_overflow_reports
    self._skipped = None

  def setup_graph(self, ctx):
    images, labels = ctx.training.loop.fetches["last_images"], ctx.training.loop.fetches["last_labels"]
    shapes = (images.shape, labels.shape, images.dtype, labels.dtype)
    self.probe = debugging.Probe(ctx.model_fn, ctx.plan.model.num_classes, shapes, ctx.plan.optim.label_smoothing)

  def stop_at(self, run):
    later = [s + 1 for s in self.dump_steps if s >= run.step]
    return later[0] if later else None

  def after_loop(self, run, loop):
    out = loop.values
    skipped = int(out.skipped)
    overflowed = (self._skipped is not None and skipped > self._skipped) or not np.isfinite(out.last_loss)
    self._skipped = skipped
    if self.over_dump_dir and overflowed and self._reports_left > 0:
      self._reports_left -= 1
      self.probe.report_overflow(run.sess, out.last_images, out.last_labels, self.over_dump_dir, run.step)
    if self.data_dump_dir and (run.step - 1) in self.dump_steps:
      self.probe.dump(run.sess, out.last_images, out.last_labels, self.data_dump_dir, run.step - 1)


class NanGuard(Callback):
  """Stops the run when the loss is not finite: at once without loss scaling; with it (where a skipped overflow
  step is normal) after `patience` loops in a row."""

  def __init__(self, loss_scaling, patience=3):
    self.patience = patience if loss_scaling else 1
    self._bad = 0

  def after_loop(self, run, loop):
    loss = float(loop.values.mean_loss)
    self._bad = 0 if math.isfinite(loss) else self._bad + 1
    if self._bad >= self.patience:
      raise TrainingStopped("the training loss is %s at step %d: the weights diverged; lower --lr, keep "
                            "--grad_clip_norm, or find the op with --over_dump (checkpoints up to step %s are "
                            "intact)" % (loss, run.step, run.graph.checkpoints.last_saved_step))


def wants_debug_probe(plan):
  """Whether the training loop must keep its last batch for DebugDumps (CPU/GPU dumps on)."""
  return plan.device != "npu" and (plan.debug.over_dump_dir is not None or plan.debug.data_dump_dir is not None)


def make_callbacks(plan):
  """The callbacks of a run, in the order they see each loop (logging and dumps before the NaN guard, which comes
  before evaluation and checkpoints so that a diverged loop is never saved; the EMA before the evaluation, whose
  views it adds to). --mode=eval: the EMA (when on) and the evaluation only."""
  from launch import ema  # pylint: disable=g-import-not-at-top  (ema.WeightAverage is a Callback: no cycle)
  averaging = [ema.WeightAverage(plan.optim.ema_decay)] if plan.optim.ema_decay else []
  evaluating = plan.mode != "train" and plan.data.eval_ds is not None
  if plan.mode == "eval":
    return averaging + [Evaluator(trigger=None, hflip=plan.loop.eval_hflip)]
  loss_scaling = plan.precision.loss_scale_mode != "off"
  # Throughput counts every rank's images: the global batch of a step.
  global_batch = plan.data.train_batch_size * plan.data.accum_steps * plan.dist.num_ranks
  callbacks = [TrainLogger(plan.loop.log_every_loops, global_batch, loss_scaling)]
  if plan.debug.profile_dir and plan.device != "npu":
    callbacks.append(Profiler(plan.debug.profile_dir, timing_warmup_steps(plan), plan.debug.profiling_steps))
  if wants_debug_probe(plan):
    callbacks.append(DebugDumps(plan.debug.over_dump_dir, plan.debug.data_dump_dir, plan.debug.dump_steps))
  callbacks.append(NanGuard(loss_scaling))
  callbacks += averaging
  steps_per_epoch = plan.schedule.steps_per_epoch
  if evaluating:
    callbacks.append(Evaluator(Trigger(plan.loop.eval_every_loops, steps_per_epoch), plan.loop.eval_hflip))
  callbacks.append(StorageGuard(plan.model_dir))
  callbacks.append(CheckpointSaver(Trigger(plan.loop.save_every_loops, steps_per_epoch)))
  return callbacks


def acting(callbacks, rank):
  """The callbacks that act on `rank` (rank0_only ones only on rank 0)."""
  return [c for c in callbacks if rank == 0 or not c.rank0_only]


def timing_warmup_steps(plan):
  """Loops ending within this many steps of the run's start are left out of img/s (launch.metrics): the first
  loop and --warmup_loops more, or the first 50 steps."""
  warmup_loops = plan.loop.warmup_loops
  return (1 + warmup_loops) * plan.schedule.iterations if warmup_loops else metrics.DEFAULT_WARMUP_STEPS
