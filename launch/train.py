"""python -m launch.train: trains (and evaluates) a ViT in TensorFlow graph mode on the NPU, a GPU or the CPU.

With no flags it trains the digits recipe (a 4-layer ViT with 4x4 patches on the embedded 8x8 digits upscaled to
16x16) and evaluates it every epoch. A second run with the same --model_dir resumes from its latest checkpoint.

The run, top to bottom: flags -> checked RunPlan (launch/plan.py, every "auto" resolved; written to plan.json) ->
graph from the plan alone (variables, the training input pipeline and the N-step train op from the step factory
launch/train_graph.build_training, then each callback's own ops: EMA, eval, debug probe) -> session (initialise;
restore, or load --init_checkpoint) -> loop over sess.run, each loop as long as the callbacks allow
(launch/callbacks.py: log line, dumps, NaN guard, EMA, eval, checkpoint) -> summary.
Records go to the console, train.log, metrics.jsonl and TensorBoard (launch/monitors.py).
"""
import collections
import os
import signal
import sys
import time

if __name__ == "__main__":  # before TensorFlow is imported: a preloaded allocator must be there from the start
  from launch import allocator as _allocator
  _allocator.restart_with_tcmalloc()

# TensorFlow's C++ start-up INFO lines would bury a one-line usage error; warnings and errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tensorflow.compat.v1 as tf

from input.dataset_base import UnreadableDatasetError
from input.mixing import MixSpec
from input.pipeline import InputPipeline
from input.workers import BatchLostError
from input.workers import WorkerStalledError
from launch import allocator
from launch import callbacks as callbacks_lib
from launch import device as device_lib
from launch import distributed
from launch import errors
from launch import flags as flags_lib
from launch import interrupts
from launch import log_format
from launch import metrics
from launch import monitors as monitors_lib
from launch import npu
from launch import run_lock
from launch import run_record
from launch import storage
from launch import train_graph
from launch import watchdog
from launch import xla_cache
from launch.checkpoints import Checkpoints, checkpoint_prefixes, newest_readable, step_of_checkpoint
from launch.flags import FlagError
from launch.plan import make_plan
from launch.plan import to_json as to_plan_json
from vit_raw import checkpoint as vit_checkpoint
from vit_raw.model import count_parameters, forward_flops

flags_lib.define_flags()
FLAGS = flags.FLAGS

TrainGraph = collections.namedtuple("TrainGraph", [
    "initializer", "best", "train_pipe", "train_iterator", "training", "pipelines", "callbacks", "checkpoints",
    "parallel", "broadcast", "weights_spread", "stop_vote", "stop_votes"
])
TrainGraph.__doc__ = """Every op of a run.

Attributes:
  initializer: the vit_raw.checkpoint Initializer of --init_checkpoint (None when resuming or without one).
  best: the callbacks.BestTop1 record (the checkpointed best top-1).
  train_pipe, train_iterator, training: the training input pipeline, its iterator and the
    launch.train_graph.Training (None in --mode=eval).
  pipelines: every input pipeline of the run (the callbacks' too), to close and to ask about failures.
  callbacks: the run's callbacks (callbacks.make_callbacks), their graph pieces built.
  checkpoints: the run's Checkpoints (every global variable, made after all of them exist).
  parallel: the data-parallel seam (launch.distributed.DataParallel; inactive with one rank).
  broadcast: the op that sets every variable to rank 0's value (run after initialising and restoring).
  weights_spread: largest |w - w on rank 0| over the ranks (0 when they hold the same weights).
  stop_vote, stop_votes: a float32 [1] placeholder (1: this rank was signalled) and its sum over the ranks, so all
    ranks stop after the same loop (None with one rank).
"""


def build_graph(plan, restoring, parallel):
  """Builds every op of the run in the default graph from the plan alone; returns a TrainGraph. Every rank builds
  the same graph in the same order, so their collectives pair up. The training pipeline starts at batch 0 until
  the restore says where the run is (its generator reads start_batch when the iterator starts)."""
  tf.set_random_seed(plan.seed)
  model_fn = train_graph.make_model_fn(plan)
  train_graph.create_model_variables(plan, model_fn)  # first: initial values never depend on later ops
  initializer = None
  if plan.model.init_checkpoint and not restoring:
    try:
      initializer = vit_checkpoint.init_from_checkpoint(plan.model.init_checkpoint, plan.model.config,
                                                        plan.model.num_classes, plan.model.image_size)
    except ValueError as e:
      raise FlagError("--init_checkpoint: %s" % e)
  callbacks = callbacks_lib.make_callbacks(plan)
  pipelines, train_pipe, train_iterator, training = [], None, None, None
  if plan.mode != "eval":
    data = plan.data
    # A batch of the pipeline holds the step's accum_steps micro-batches: exactly the examples of one batch of
    # train_batch_size x accum_steps, so accumulation changes memory, not what is learned.
    train_pipe = InputPipeline(data.train_ds, plan.model.image_size, data.train_batch_size * data.accum_steps, True,
                               workers=data.workers, seed=data.seed, rank=plan.dist.rank, num_ranks=plan.dist.num_ranks,
                               **input_options(plan))
    pipelines.append(train_pipe)
    train_iterator = tf.data.make_initializable_iterator(train_pipe.tf_dataset())
    hooks = [hook for c in callbacks for hook in c.step_hooks(plan)]
    training = train_graph.build_training(plan, train_graph.BatchSource(train_iterator), parallel, hooks,
                                          keep_last_batch=callbacks_lib.wants_debug_probe(plan), model_fn=model_fn)
  with tf.variable_scope("run", use_resource=True):
    best_var = tf.get_variable("best_top1", [], tf.float32, tf.constant_initializer(-1.0), trainable=False)
  best_input = tf.placeholder(tf.float32, [])
  best = callbacks_lib.BestTop1(best_var, best_input, best_var.assign(best_input, read_value=False))
  context = callbacks_lib.GraphContext(plan, parallel, model_fn, training, best, pipelines)
  for callback in callbacks:
    callback.setup_graph(context)
  if training is None:  # --mode=eval restores a training checkpoint: its global step must exist to be read
    tf.get_variable("global_step", [], tf.int64, tf.zeros_initializer(), trainable=False, use_resource=True)
  broadcast = parallel.broadcast_variables(tf.global_variables())
  parallel.build_agreement()
  spread = parallel.weights_spread(tf.trainable_variables())
  stop_vote = stop_votes = None
  if parallel.active and training is not None:
    stop_vote = tf.placeholder(tf.float32, [1], name="stop_vote")
    stop_votes = parallel.allreduce_sum(stop_vote)
  return TrainGraph(initializer, best, train_pipe, train_iterator, training, pipelines, callbacks,
                    Checkpoints(plan.model_dir, plan.loop.keep_checkpoints), parallel, broadcast, spread, stop_vote,
                    stop_votes)


def input_options(plan):
  """The training pipeline's augmentation, mixing and safety arguments (input.pipeline.InputPipeline) from the
  plan."""
  augment, mix = plan.data.augment, plan.data.mix
  return {
      "max_pixels": plan.data.max_image_pixels,
      "stall_seconds": plan.data.input_timeout,
      "augment": augment.crop,
      "padding": augment.padding,
      "hflip": augment.hflip,
      "erase_prob": augment.random_erasing,
      "randaugment": augment.randaugment,
      "color_jitter": augment.color_jitter,
      "mix": None if mix is None else MixSpec(mix.mixup, mix.cutmix, mix.prob, mix.switch_prob, mix.off_epoch)
  }


def train(plan, run_log=None):
  """Builds the graph, restores or initialises, runs the loop (or one evaluation); returns the summary record.

  With several ranks every rank restores the same checkpoint (or initialises), then takes rank 0's variables, and
  checks that all ranks run the same plan from the same step before the first training collective. A folder that
  holds checkpoints is never trained afresh: the newest one that restores is used, or the run stops
  (checkpoints.NoUsableCheckpoint). run_log: the RunLog writing train.log, whose failures stop the run."""
  candidates = checkpoint_prefixes(plan.model_dir)
  engine = plan.dist.engine
  parallel = distributed.DataParallel(engine, plan.dist.allreduce_bucket_mb)
  config = engine.configure(device_lib.session_config(plan))
  if hasattr(engine, "start"):
    engine.start(config)
  graph = None
  try:
    with tf.device(engine.device):
      graph = build_graph(plan, restoring=bool(candidates), parallel=parallel)
    monitors = monitors_lib.make_monitors(plan.model_dir, tf.get_default_graph(), plan.dist.rank, run_log)
    guard = watchdog.RankGuard(engine, plan.model_dir).start()
    try:
      with tf.Session(engine.target, config=config) as sess:
        start_step = restore_or_initialise(sess, graph, plan, candidates)
        return train_in_session(sess, plan, graph, monitors, guard, start_step)
    except tf.errors.OpError:
      raise_input_failure(graph)
      raise
    finally:
      guard.stop()
      monitors.close()
  finally:
    for pipe in (graph.pipelines if graph is not None else []):
      pipe.close()


def restore_or_initialise(sess, graph, plan, candidates):
  """Initialises every variable, then restores the newest usable checkpoint of `candidates` (the run's
  model.ckpt-* prefixes, newest first), or loads --init_checkpoint; returns the global step the run starts at
  and points the training pipeline there."""
  sess.run(tf.global_variables_initializer())
  start_step = 0
  if candidates:
    latest = graph.checkpoints.restore_newest(sess, candidates)
    start_step = graph.checkpoints.last_saved_step
    logging.info(
        log_format.RESUMED.format(path=latest, step=start_step, epoch=start_step / plan.schedule.steps_per_epoch))
  elif graph.initializer is not None:
    graph.initializer.init_fn(sess)
    for line in graph.initializer.report:
      logging.info("init_checkpoint: %s", line)
  if graph.train_pipe is not None:
    graph.train_pipe.start_batch = start_step  # the iterator is started by run_loop, after this
  return start_step


def train_in_session(sess, plan, graph, monitors, guard, start_step):
  """Takes rank 0's variables, checks the ranks agree, then runs the loop (or one evaluation); the summary."""
  parallel = graph.parallel
  try:
    sess.run(graph.broadcast)
    guard.connected()
    parallel.check_agreement(sess, agreement_values(plan, start_step))
    run = callbacks_lib.RunState(sess, graph, plan, monitors, start_step, float(sess.run(graph.best.variable)))
    warmup = callbacks_lib.timing_warmup_steps(plan)
    run.put(run_start_record(plan, start_step, warmup))
    if plan.mode == "eval":
      evaluator, = [c for c in graph.callbacks if isinstance(c, callbacks_lib.Evaluator)]
      evaluator.evaluate(run)
    else:
      try:
        run_loop(run, graph.callbacks)
      except interrupts.Interrupted as e:
        run.put({
            "event": "interrupted",
            "step": e.step,
            "signal": signal.Signals(e.signum).name,
            "checkpoint": e.checkpoint,
            "time": time.time()
        })
        logging.warning("%s, checkpoint %s; rerun the same command to resume", e, e.checkpoint or "none written")
        raise
    if parallel.active:
      logging.info("ranks in sync: max |w - w(rank 0)| = %g over %d ranks", sess.run(graph.weights_spread),
                   parallel.size)
  except tf.errors.OpError as e:
    raise_input_failure(graph)
    if not parallel.active or isinstance(e, tf.errors.OutOfRangeError):
      raise
    # TF 2.x's collectives (and Horovod's) fail when a peer goes away, where TF 1.15's wait for the watchdog.
    raise distributed.RankLost(guard.explain(e))
  guard.finish()
  summary = summary_record(run, warmup, graph.train_pipe)
  run.put(summary)
  return summary


def raise_input_failure(graph):
  """When a TF error came from an input pipeline, raises the pipeline's own one-line error instead (the worker,
  the signal and the file for a dead worker; the first bad files of an unreadable dataset); TF's traceback goes
  to debug level only."""
  for pipe in graph.pipelines:
    error = pipe.error
    if error is not None:
      logging.debug("input pipeline failure", exc_info=True)
      if isinstance(error, UnreadableDatasetError):
        raise FlagError(str(error))
      if isinstance(error, WorkerStalledError):
        raise errors.InputFailed("%s; --input_timeout sets the limit; the checkpoints so far are intact: rerun the "
                                 "same command to resume once the data is readable" % error)
      if isinstance(error, BatchLostError):
        raise errors.InputFailed("%s; the checkpoints so far are intact: rerun the same command to resume" % error)
      lines = str(error).strip().splitlines()
      if len(lines) > 1:  # a worker's exception: its traceback at debug level (--verbosity=1), its last line here
        logging.debug(str(error))
        raise errors.InputFailed("%s %s" % (lines[0], lines[-1]))
      raise errors.InputFailed(lines[0])


def agreement_values(plan, start_step):
  """What every rank must agree on before training (launch.distributed.AGREEMENT_FIELDS, in that order)."""
  model, data, schedule = plan.model, plan.data, plan.schedule
  params = count_parameters(model.config, model.num_classes, model.image_size)
  lines = [l for l in plan.flag_lines if l.lstrip("-").split("=")[0] not in flags_lib.PER_RANK_FLAGS]
  return [
      start_step, schedule.total_steps, schedule.iterations, schedule.steps_per_epoch, data.accum_steps,
      data.train_batch_size,
      len(data.train_ds),
      len(data.eval_ds) if data.eval_ds is not None else 0, model.num_classes, params % 2**24,
      distributed.flags_fingerprint(lines)
  ]


def run_loop(run, callbacks):
  """sess.run the train op until the last step; each loop ends where the plan and the callbacks say. The
  callbacks' after_train runs however the loop ends (a stop, an error, an interrupt)."""
  plan, graph = run.plan, run.graph
  schedule, loop_op = plan.schedule, graph.training.loop
  run.sess.run(graph.train_iterator.initializer)
  fetches = dict(loop_op.fetches)
  extra = {}
  for callback in callbacks:
    extra.update(callback.fetches())
  fetches.update(extra)
  if plan.device == "npu":
    fetches["update"] = npu.set_iterations_per_loop(run.sess, fetches["update"], schedule.iterations)
  # Loop lengths come from the global step, the plan and the callbacks of every rank (rank-0-only ones included),
  # never from rank-local data, so all ranks run the same steps per sess.run.
  stoppers, callbacks = callbacks, callbacks_lib.acting(callbacks, plan.dist.rank)
  for callback in callbacks:
    callback.before_train(run)
  logging.info("first loop: building, optimising and compiling the graph, starting the input workers ...")
  stop = interrupts.StopRequests(" (up to %d steps)" % schedule.iterations)
  try:
    with stop:
      _loops(run, callbacks, stoppers, fetches, extra, stop)
  except interrupts.Interrupted as e:
    run.interrupted = e
    raise
  except BaseException as e:
    run.failure = e
    raise
  finally:
    for callback in callbacks:
      if run.failure is None:
        callback.after_train(run)
      else:
        _after_train_quietly(callback, run)
    if run.interrupted is not None:
      run.interrupted.checkpoint = graph.checkpoints.last_saved_path


def _loops(run, callbacks, stoppers, fetches, extra, stop):
  """The sess.run loop of run_loop, until the last step or a stop request (raised as interrupts.Interrupted)."""
  plan, graph = run.plan, run.graph
  schedule, loop_op = plan.schedule, graph.training.loop
  index = 0
  while run.step < schedule.total_steps:
    index += 1
    # The NPU's device loop always runs plan.iterations steps; the plan made the total a multiple of it.
    steps = min([schedule.iterations, schedule.total_steps - run.step] +
                [s - run.step for s in (c.stop_at(run) for c in stoppers) if s is not None and s > run.step])
    feed = {loop_op.iterations: steps} if schedule.in_graph_loop else None
    options = {}
    for callback in callbacks:
      options.update(callback.run_options(run))
    start = time.time()
    out = train_graph.values(run.sess.run(fetches, feed_dict=feed, **options), extra)
    first_step, run.step = run.step, int(out.global_step)
    if run.step <= first_step:  # a loop that never ends is worse than a clear stop
      raise callbacks_lib.TrainingStopped("the training op ran no step (global step stays at %d)" % run.step)
    loop = callbacks_lib.LoopResult(index, first_step, run.step, run.step - first_step, time.time() - start, out)
    for callback in callbacks:
      callback.after_loop(run, loop)
    signalled = stop.announce()
    if graph.stop_votes is not None:  # every rank stops after the same loop, whichever got the signal
      signalled = run.sess.run(graph.stop_votes, {graph.stop_vote: [float(signalled)]})[0] > 0
    if signalled and run.step < schedule.total_steps:
      raise interrupts.Interrupted(stop.signum or signal.SIGTERM, run.step)


def _after_train_quietly(callback, run):
  """after_train of a run that is already failing: its own error is logged, never raised over the first one."""
  try:
    callback.after_train(run)
  except Exception:  # pylint: disable=broad-except
    logging.debug("after_train of %s failed while the run was stopping", type(callback).__name__, exc_info=True)


def summary_record(run, warmup_steps, train_pipe=None):
  """The closing record: final and best accuracy (and the final accuracy of each further view: final_ema_top1,
  final_hflip_top1, ...), final loss, throughput and start-up (launch.metrics), wall time, and the fraction of the
  run the input workers kept the batch generator waiting (when measured)."""
  result = run.last_eval or {"top1": float("nan"), "top5": float("nan")}
  best = max(run.best_top1, result["top1"]) if np.isfinite(result["top1"]) else run.best_top1
  record = {
      "event": "summary",
      "step": run.step,
      "final_top1": result["top1"],
      "final_top5": result["top5"],
      "best_top1": best if best >= 0 else float("nan"),  # the stored best starts at -1: nothing was evaluated
      "final_loss": run.train_records[-1]["loss"] if run.train_records else float("nan"),
      "img_per_sec": metrics.run_images_per_sec(run.train_records, warmup_steps),
      "wall_s": time.time() - run.start_time,
      "steps": run.step
  }
  waited = train_pipe.wait_fraction() if train_pipe is not None else None
  if waited is not None:
    record["input_wait"] = waited
  startup = metrics.startup_seconds(run.train_records)
  if startup is not None:
    record["startup_s"] = startup
  record.update(("final_" + name, value) for name, value in result.items() if name.endswith("_top1"))
  return record


def run_start_record(plan, start_step, warmup_steps):
  """The "run" record: one line saying what trains, how big it is and where it writes; the flags for TensorBoard."""
  model, data, schedule, dist, precision = plan.model, plan.data, plan.schedule, plan.dist, plan.precision
  params = count_parameters(model.config, model.num_classes, model.image_size)
  gflop = forward_flops(model.config, model.image_size, model.num_classes) / 1e9
  text = ("%s (%s parameters, %.3g GFLOP per image forward) on %s, %s compute (%s, loss scale %s) | %s: %d "
          "classes, %d train / %s test images of %d px, %s augmentation | global batch %s%s, %d steps (%d per "
          "epoch), %d per sess.run%s | %s lr %g %s, warm-up %d steps | writes to %s" %
          (model.config.name + (" with a conv stem" if model.config.stem == "conv" else ""), "%.2f M" %
           (params / 1e6) if params >= 1e6 else "{:,}".format(params), gflop, plan.device,
           tf.as_dtype(precision.compute_dtype).name,
           precision.mode, precision.loss_scale_mode, data.train_ds.name, model.num_classes, len(data.train_ds),
           len(data.eval_ds) if data.eval_ds is not None else "-", model.image_size, describe_augment(plan),
           distributed.describe_global_batch(distributed.Layout(data.train_batch_size, data.accum_steps,
                                                                dist.num_ranks)), " (%s, rank %d)" %
           (dist.engine.name, dist.rank) if dist.num_ranks > 1 else "", schedule.total_steps, schedule.steps_per_epoch,
           schedule.iterations, " in the graph" if schedule.in_graph_loop else "", plan.optim.name, plan.optim.lr,
           schedule.kind, schedule.warmup_steps, os.path.abspath(plan.model_dir)))
  return {
      "event": "run",
      "text": text,
      "step": start_step,
      "total": schedule.total_steps,
      "mode": plan.mode,
      "model": model.config.name,
      "stem": model.config.stem,
      "parameters": params,
      "gflop_per_image": gflop,
      "device": plan.device,
      "batch_size": data.train_batch_size,
      "accum_steps": data.accum_steps,
      "global_batch_size": data.train_batch_size * data.accum_steps * dist.num_ranks,
      "num_ranks": dist.num_ranks,
      "engine": dist.engine.name,
      "rank": dist.rank,
      "timing_warmup_steps": warmup_steps,
      "time": time.time(),
      "flags": plan.flag_lines
  }


def describe_augment(plan):
  """The training augmentation in a few words, for the run line ("inception", "crop+flip+rand-m9..., mixup 0.8")."""
  a = plan.data.augment
  parts = [a.crop] + (["flip"] if a.hflip and a.crop == "crop" else []) + ([a.randaugment] if a.randaugment else [])
  parts += ["jitter %g" % a.color_jitter] if a.color_jitter else []
  parts += ["erasing %g" % a.random_erasing] if a.random_erasing else []
  mix = plan.data.mix
  if mix is not None:
    parts += ["mixup %g" % mix.mixup] if mix.mixup else []
    parts += ["cutmix %g" % mix.cutmix] if mix.cutmix else []
  return "+".join(parts)


def warn_about_changed_flags(model_dir, lines):
  """On resume: one warning naming the flags that differ from the run's flags.txt in a way that changes training."""
  try:
    before = run_record.read_flags(model_dir)
  except ValueError:
    return
  now = run_record.parse_flag_lines(lines)
  changed = [
      "--%s=%s (was %s)" % (name, now.get(name, "unset"), before.get(name, "unset"))
      for name in sorted(set(before) | set(now))
      if name not in flags_lib.COSMETIC_FLAGS and before.get(name) != now.get(name)
  ]
  if changed:
    logging.warning("resuming with flags that differ from %s: %s; the run goes on with the new values",
                    os.path.join(model_dir, run_record.FLAGS_FILE), ", ".join(changed))


def finished_run(model_dir, total_steps):
  """The stored summary of a run in `model_dir` that already reached `total_steps`, or None."""
  latest = newest_readable(model_dir)
  step = step_of_checkpoint(latest)
  if not latest or step < total_steps:
    return None
  path = os.path.join(model_dir, metrics.METRICS_FILE)
  stored = [r for r in metrics.read_jsonl(path) if r.get("event") == "summary"] if os.path.isfile(path) else []
  summary = stored[-1] if stored else {}
  best = float(tf.train.load_variable(latest, "run/best_top1"))
  return dict(summary, event="summary", step=step, steps=step, best_top1=best if best >= 0 else float("nan"))


def run(f):
  """Checks the flags, then trains and/or evaluates; returns the summary record. Raises FlagError before any work
  for a bad command line (or a run folder another trainer holds)."""
  flags_lib.resolve_file_urls(f)
  flags_lib.check_flags(f)
  allocated, allocator_line = allocator.status(f.malloc)
  if not allocated:
    raise FlagError("--malloc=tcmalloc: %s" % allocator.why_not())
  # Records from opening the datasets (listing and label warnings) are held until the run starts writing its log.
  log = monitors_lib.RunLog(f.model_dir)
  logging.info(allocator_line)
  if xla_cache.enabled_line():  # enabled by parse_flags (TensorFlow reads TF_XLA_FLAGS before main runs)
    logging.info(xla_cache.enabled_line())
  lock = None
  try:
    plan = make_plan(f)
    if plan.dist.rank == 0:  # one writer per run folder: rank 0 of one run (the other ranks write nothing there)
      try:
        lock = run_lock.RunLock(plan.model_dir).acquire()
      except ValueError as e:  # RunLockedError included
        raise FlagError(str(e))
      storage.check_writable(plan.model_dir)  # before anything is trained: a read-only folder keeps nothing
    if plan.mode != "eval":
      done = finished_run(plan.model_dir, plan.schedule.total_steps)
      if done is not None:
        logging.info(
            "%s: already finished at step %d of %d; nothing to do (remove the folder, pass another "
            "--model_dir, or raise --train_steps/--num_epochs to train on)", plan.model_dir, done["step"],
            plan.schedule.total_steps)
        if "final_top1" in done:
          logging.info(log_format.summary_line(done))
        return done
    if plan.dist.rank == 0:
      # train.log is rank 0's; the other ranks' lines go to their console (launch.spawn files them as rank_<r>.log).
      write_run_record(plan, log)
    for note in plan.notes:
      (logging.warning if note.startswith("WARNING: ") else logging.info)("plan: %s", note.replace("WARNING: ", ""))
    return train(plan, log if plan.dist.rank == 0 else None)
  finally:
    log.close()
    if lock is not None:
      lock.release()


def write_run_record(plan, log):
  """Starts train.log and writes the files that describe the run (launch.run_record); a folder that cannot take
  them stops the run with one line (launch.storage.StorageFailed) before anything is trained."""
  what = monitors_lib.LOG_FILE
  try:
    log.start_file()
    if checkpoint_prefixes(plan.model_dir):
      warn_about_changed_flags(plan.model_dir, plan.flag_lines)
    for what, write, value in ((run_record.CLASS_NAMES_FILE, run_record.write_class_names, plan.data.class_names),
                               (run_record.FLAGS_FILE, run_record.write_flag_lines,
                                plan.flag_lines), (run_record.PLAN_FILE, run_record.write_plan, to_plan_json(plan))):
      write(plan.model_dir, value)
    what = monitors_lib.LOG_FILE
    if log.failure is not None:
      raise log.failure
  except OSError as e:
    raise storage.failure(e, what, plan.model_dir) or e


def main(argv):
  del argv
  monitors_lib.use_compact_console()
  try:
    run(FLAGS)
  except errors.UsageError as e:
    fail(str(e))
  except errors.RunStopped as e:
    fail(str(e), code=1)
  except interrupts.Interrupted as e:  # already logged as the run's last line
    sys.exit(e.exit_code)


def fail(message, code=2):
  """The one line a user sees for a bad command line (exit code 2, as for any usage error) or a stopped run."""
  sys.stderr.write("launch.train: error: %s\n" % message)
  sys.stderr.flush()
  sys.exit(code)


def usage():
  """--help: what the trainer does and every one of its flags (absl's and TensorFlow's own only with --helpfull)."""
  return "%s\nFlags of launch.train (--helpfull adds absl's and TensorFlow's):\n\n%s\n" % (
      __doc__, FLAGS.module_help(flags_lib.__name__))


def parse_flags(argv):
  """absl's parser, but --help lists our flags and exits 0, and a bad or unknown flag is one line and exit code 2
  (absl alone prints the usage and exits 1)."""
  if any(arg in ("--help", "-h", "--helpshort", "-help") for arg in argv[1:]):
    sys.stdout.write(usage())
    sys.exit(0)
  if any(arg in ("--helpfull", "-helpfull") for arg in argv[1:]):
    sys.stdout.write("%s\nEvery flag, absl's and TensorFlow's included:\n\n%s\n" % (__doc__, FLAGS.get_help()))
    sys.exit(0)
  try:
    argv = FLAGS(argv)
  except flags.Error as e:
    fail(str(e))
  if FLAGS.xla_cache:
    try:  # a command line run() would refuse leaves no cache folder behind
      flags_lib.check_flags(FLAGS)
    except FlagError as e:
      fail(str(e))
    xla_cache.enable(FLAGS.cache_dir)
  return argv


if __name__ == "__main__":
  # TF's own Python deprecation notices go to its logger, not to our log lines; keep only its errors.
  tf.get_logger().setLevel("ERROR")
  tf.disable_v2_behavior()
  app.run(main, flags_parser=parse_flags)
