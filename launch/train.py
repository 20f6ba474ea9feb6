"""python -m launch.train: trains (and evaluates) a ViT in TensorFlow graph mode on the NPU, a GPU or the CPU.

With no flags it trains the digits recipe (a 4-layer ViT with 4x4 patches on the embedded 8x8 digits upscaled to
16x16) and evaluates it every epoch. A second run with the same --model_dir resumes from its latest checkpoint.

The run, top to bottom: flags -> checked RunPlan (launch/plan.py) -> graph (variables, optimizer, input pipelines,
the N-step train op, eval) -> session (initialise; restore, or load --init_checkpoint) -> loop over sess.run, each
loop as long as the callbacks allow (launch/callbacks.py: log line, dumps, NaN guard, eval, checkpoint) -> summary.
Records go to the console, train.log, metrics.jsonl and TensorBoard (launch/monitors.py).
"""
import collections
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

from input.dataset_base import UnreadableDatasetError
from input.pipeline import InputPipeline
from input.preprocess import to_model_input
from launch import callbacks as callbacks_lib
from launch import debugging
from launch import device as device_lib
from launch import distributed
from launch import evaluation
from launch import flags as flags_lib
from launch import log_format
from launch import loss_scale as loss_scale_lib
from launch import metrics
from launch import monitors as monitors_lib
from launch import npu
from launch import optimizers
from launch import run_lock
from launch import run_record
from launch import schedules
from launch import train_graph
from launch import watchdog
from launch.checkpoints import Checkpoints, step_of_checkpoint
from launch.flags import FlagError
from launch.plan import make_plan
from vit_raw import checkpoint as vit_checkpoint
from vit_raw.model import count_parameters, forward_flops, vit

flags_lib.define_flags()
FLAGS = flags.FLAGS

# Flags that change neither the model nor the optimisation: a resume may change them without a warning.
_COSMETIC_FLAGS = frozenset([
    "model_dir", "workers", "eval_batch_size", "log_every_loops", "warmup_loops", "keep_checkpoints",
    "save_every_loops", "eval_every_loops", "mode", "device", "profiling", "profiling_options", "profiling_steps",
    "over_dump", "over_dump_path", "data_dump_flag", "data_dump_step", "data_dump_path", "fusion_switch_file",
    "init_checkpoint", "max_image_pixels", "distribute", "allreduce_bucket_mb", "rank"
])
# Flags that may differ between the ranks of one run (paths as each machine sees them); the rest must agree.
_PER_RANK_FLAGS = _COSMETIC_FLAGS | {"data_dir"}

TrainGraph = collections.namedtuple("TrainGraph", [
    "initializer", "best_top1", "best_input", "set_best", "train_pipe", "train_iterator", "loop", "probe", "eval_pipe",
    "eval", "checkpoints", "parallel", "broadcast", "weights_spread"
])
TrainGraph.__doc__ = """Every op of a run.

Attributes:
  initializer: the vit_raw.checkpoint.Initializer loading --init_checkpoint (None when resuming or without one).
  best_top1, best_input, set_best: the checkpointed best top-1, and how to set it.
  train_pipe, train_iterator, loop: the training input pipeline, its iterator and the N-step train op (None in
    --mode=eval).
  probe: the CPU/GPU debug probe for --over_dump / --data_dump_flag (or None).
  eval_pipe, eval: the evaluation pipeline and graph (None in --mode=train).
  checkpoints: the run's Checkpoints.
  parallel: the data-parallel seam (launch.distributed.DataParallel; inactive with one rank).
  broadcast: the op that sets every variable to rank 0's value (run after initialising and restoring).
  weights_spread: largest |w - w on rank 0| over the ranks (0 when they hold the same weights).
"""


def make_model_fn(plan, dropout, kernels=None):
  """fn(images uint8, is_training) -> float32 logits: [-1, 1] scaling in the compute dtype, then the ViT with the
  given vit_raw.kernels.KernelSet (None: the plain ops)."""

  def model_fn(images, is_training):
    return vit(to_model_input(images, plan.compute_dtype), plan.config, plan.num_classes, is_training,
               dropout_rate=dropout, compute_dtype=plan.compute_dtype, kernels=kernels)

  return model_fn


def build_graph(f, plan, start_step, restoring, parallel):
  """Builds every op of the run in the default graph; returns a TrainGraph. Every rank builds the same graph in the
  same order, so their collectives pair up."""
  tf.set_random_seed(f.seed)
  model_fn = make_model_fn(
      plan, f.dropout,
      device_lib.kernel_set(plan.device, f.kernels, device_lib.lean_backward_parts(f.lean_backward,
                                                                                   plan.compute_dtype)))
  size = plan.image_size
  # Variables first, from a dummy batch, so their initial values never depend on what is built after them.
  train_graph.forward_with_reads(model_fn, tf.zeros([1, size, size, 3], tf.uint8), False, record=False)
  initializer = None
  if f.init_checkpoint and not restoring:
    try:
      initializer = vit_checkpoint.init_from_checkpoint(f.init_checkpoint, plan.config, plan.num_classes, size)
    except ValueError as e:
      raise FlagError("--init_checkpoint: %s" % e)
  global_step = tf.get_variable("global_step", [], tf.int64, tf.zeros_initializer(), trainable=False, use_resource=True)
  tf.add_to_collection(tf.GraphKeys.GLOBAL_STEP, global_step)
  with tf.variable_scope("run", use_resource=True):
    best_top1 = tf.get_variable("best_top1", [], tf.float32, tf.constant_initializer(-1.0), trainable=False)
  best_input = tf.placeholder(tf.float32, [])
  set_best = best_top1.assign(best_input, read_value=False)

  train_pipe = train_iterator = loop = probe = None
  if f.mode != "eval":
    npu_scaling = plan.device == "npu" and plan.loss_scale_mode != "off" and plan.accum_steps == 1
    loss_scale = loss_scale_lib.LossScale("off" if npu_scaling else plan.loss_scale_mode, plan.loss_scale_init,
                                          f.loss_scale_growth_steps)
    lr_holder = train_graph.learning_rate_holder()
    optimizer = optimizers.make_optimizer(f.optimizer, lr_holder, f.momentum, f.weight_decay)
    if npu_scaling:
      optimizer = npu.loss_scale_optimizer(optimizer, plan.loss_scale_mode, plan.loss_scale_init,
                                           f.loss_scale_growth_steps, is_distributed=plan.num_ranks > 1)

    def lr_fn(step):
      return schedules.learning_rate(step, plan.lr, plan.total_steps, f.lr_schedule, plan.lr_warmup_steps,
                                     f.lr_decay_value, plan.decay_steps)

    # A batch of the pipeline holds the step's accum_steps micro-batches: exactly the examples of one batch of
    # train_batch_size x accum_steps, so accumulation changes memory, not what is learned.
    train_pipe = InputPipeline(plan.train_ds, size, plan.train_batch_size * plan.accum_steps, True, workers=f.workers,
                               seed=f.seed, rank=plan.rank, num_ranks=plan.num_ranks, start_batch=start_step,
                               augment=plan.augment)
    train_iterator = tf.data.make_initializable_iterator(train_pipe.tf_dataset())
    source = train_graph.BatchSource(train_iterator)
    spec = train_graph.StepSpec(model_fn=model_fn, num_classes=plan.num_classes, optimizer=optimizer,
                                lr_holder=lr_holder, learning_rate_fn=lr_fn, global_step=global_step,
                                loss_scale=loss_scale, grad_clip_norm=f.grad_clip_norm,
                                label_smoothing=f.label_smoothing,
                                l2_fn=lambda variables: optimizers.l2_penalty(variables, f.weight_decay, f.optimizer),
                                optimizer_gradients=not plan.in_graph_loop and plan.accum_steps == 1,
                                parallel=parallel if parallel.active else None, accum_steps=plan.accum_steps)
    debug_probe = plan.device != "npu" and (f.over_dump or f.data_dump_flag)
    loop = train_graph.build_train_loop(spec, source, plan.iterations, plan.in_graph_loop, keep_last_batch=debug_probe)
    if npu_scaling and npu.loss_scale_of(optimizer) is not None:
      loop.fetches["loss_scale"] = npu.loss_scale_of(optimizer)  # log npu_bridge's scale, not ours (off)
    if debug_probe:
      probe = debugging.Probe(model_fn, plan.num_classes, source.shapes, f.label_smoothing)
  eval_pipe = eval_graph = None
  if plan.eval_ds is not None:
    eval_pipe = InputPipeline(plan.eval_ds, size, plan.eval_batch_size, False, workers=f.workers, seed=f.seed,
                              rank=plan.rank, num_ranks=plan.num_ranks, max_pixels=f.max_image_pixels)
    eval_graph = evaluation.build_eval(eval_pipe, lambda images: model_fn(images, False), parallel.allreduce_sum)
  broadcast = parallel.broadcast_variables(tf.global_variables())
  parallel.build_agreement()
  spread = parallel.weights_spread(tf.trainable_variables())
  return TrainGraph(initializer, best_top1, best_input, set_best, train_pipe, train_iterator, loop, probe, eval_pipe,
                    eval_graph, Checkpoints(plan.model_dir, f.keep_checkpoints), parallel, broadcast, spread)


def train(f, plan):
  """Builds the graph, restores or initialises, runs the loop (or one evaluation); returns the summary record.

  With several ranks every rank restores the same checkpoint (or initialises), then takes rank 0's variables, and
  checks that all ranks run the same plan from the same step before the first training collective."""
  latest = tf.train.latest_checkpoint(plan.model_dir)
  start_step = step_of_checkpoint(latest)
  parallel = distributed.DataParallel(plan.engine, f.allreduce_bucket_mb)
  config = plan.engine.configure(device_lib.session_config(plan, f))
  if hasattr(plan.engine, "start"):
    plan.engine.start(config)
  with tf.device(plan.engine.device):
    graph = build_graph(f, plan, start_step, restoring=latest is not None, parallel=parallel)
  monitors = monitors_lib.make_monitors(plan.model_dir, tf.get_default_graph(), plan.rank)
  guard = watchdog.RankGuard(plan.engine, plan.model_dir).start()
  try:
    with tf.Session(plan.engine.target, config=config) as sess:
      restore_or_initialise(sess, graph, plan, latest, start_step)
      return train_in_session(sess, f, plan, graph, monitors, guard, start_step)
  except tf.errors.OpError:
    raise_input_failure(graph)
    raise
  finally:
    guard.stop()
    monitors.close()
    for pipe in (graph.train_pipe, graph.eval_pipe):
      if pipe is not None:
        pipe.close()


def restore_or_initialise(sess, graph, plan, latest, start_step):
  """Initialises every variable, then restores the latest checkpoint of the run, or loads --init_checkpoint."""
  sess.run(tf.global_variables_initializer())
  if latest:
    graph.checkpoints.restore(sess, latest)
    logging.info(log_format.RESUMED.format(path=latest, step=start_step, epoch=start_step / plan.steps_per_epoch))
  elif graph.initializer is not None:
    graph.initializer.init_fn(sess)
    for line in graph.initializer.report:
      logging.info("init_checkpoint: %s", line)


def train_in_session(sess, f, plan, graph, monitors, guard, start_step):
  """Takes rank 0's variables, checks the ranks agree, then runs the loop (or one evaluation); the summary."""
  parallel = graph.parallel
  try:
    sess.run(graph.broadcast)
    guard.connected()
    parallel.check_agreement(sess, agreement_values(f, plan, start_step))
    run = callbacks_lib.RunState(sess, graph, plan, f, monitors, start_step, float(sess.run(graph.best_top1)))
    warmup = callbacks_lib.timing_warmup_steps(f, plan)
    run.put(run_start_record(f, plan, start_step, warmup))
    if f.mode == "eval":
      callbacks_lib.Evaluator(trigger=None).evaluate(run)
    else:
      run_loop(run, callbacks_lib.make_callbacks(f, plan, graph, warmup))
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
  summary = summary_record(run, warmup)
  run.put(summary)
  return summary


def raise_input_failure(graph):
  """When a TF error came from an input pipeline, raises the pipeline's own one-line error instead (the worker,
  the signal and the file for a dead worker; the first bad files of an unreadable dataset); TF's traceback goes
  to debug level only."""
  for pipe in (graph.train_pipe, graph.eval_pipe):
    error = pipe.error if pipe is not None else None
    if error is not None:
      logging.debug("input pipeline failure", exc_info=True)
      if isinstance(error, UnreadableDatasetError):
        raise FlagError(str(error))
      lines = str(error).strip().splitlines()
      if len(lines) > 1:  # a worker's exception: its traceback at debug level (--verbosity=1), its last line here
        logging.debug(str(error))
        raise callbacks_lib.TrainingStopped("%s %s" % (lines[0], lines[-1]))
      raise callbacks_lib.TrainingStopped(lines[0])


def agreement_values(f, plan, start_step):
  """What every rank must agree on before training (launch.distributed.AGREEMENT_FIELDS, in that order)."""
  params = count_parameters(plan.config, plan.num_classes, plan.image_size)
  lines = [l for l in recorded_flags(f, plan) if l.lstrip("-").split("=")[0] not in _PER_RANK_FLAGS]
  return [
      start_step, plan.total_steps, plan.iterations, plan.steps_per_epoch, plan.accum_steps, plan.train_batch_size,
      len(plan.train_ds),
      len(plan.eval_ds) if plan.eval_ds is not None else 0, plan.num_classes, params % 2**24,
      distributed.flags_fingerprint(lines)
  ]


def run_loop(run, callbacks):
  """sess.run the train op until the last step; each loop ends where the plan and the callbacks say."""
  plan, graph = run.plan, run.graph
  run.sess.run(graph.train_iterator.initializer)
  fetches = dict(graph.loop.fetches)
  if plan.device == "npu":
    fetches["update"] = npu.set_iterations_per_loop(run.sess, fetches["update"], plan.iterations)
  # Loop lengths come from the global step, the plan and the callbacks of every rank (rank-0-only ones included),
  # never from rank-local data, so all ranks run the same steps per sess.run.
  stoppers, callbacks = callbacks, callbacks_lib.acting(callbacks, plan.rank)
  for callback in callbacks:
    callback.before_train(run)
  logging.info("first loop: building, optimising and compiling the graph, starting the input workers ...")
  index = 0
  while run.step < plan.total_steps:
    index += 1
    # The NPU's device loop always runs plan.iterations steps; the plan made the total a multiple of it.
    steps = min([plan.iterations, plan.total_steps - run.step] +
                [s - run.step for s in (c.stop_at(run) for c in stoppers) if s is not None and s > run.step])
    feed = {graph.loop.iterations: steps} if plan.in_graph_loop else None
    options = {}
    for callback in callbacks:
      options.update(callback.run_options(run))
    start = time.time()
    out = run.sess.run(fetches, feed_dict=feed, **options)
    first_step, run.step = run.step, int(out["global_step"])
    if run.step <= first_step:  # a loop that never ends is worse than a clear stop
      raise callbacks_lib.TrainingStopped("the training op ran no step (global step stays at %d)" % run.step)
    loop = callbacks_lib.LoopResult(index, first_step, run.step, run.step - first_step, time.time() - start, out)
    for callback in callbacks:
      callback.after_loop(run, loop)
  for callback in callbacks:
    callback.after_train(run)


def summary_record(run, warmup_steps):
  """The closing record: final and best accuracy, final loss, throughput (launch.metrics), wall time."""
  result = run.last_eval or {"top1": float("nan"), "top5": float("nan")}
  best = max(run.best_top1, result["top1"]) if np.isfinite(result["top1"]) else run.best_top1
  return {
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


def run_start_record(f, plan, start_step, warmup_steps):
  """The "run" record: one line saying what trains, how big it is and where it writes; the flags for TensorBoard."""
  params = count_parameters(plan.config, plan.num_classes, plan.image_size)
  gflop = forward_flops(plan.config, plan.image_size, plan.num_classes) / 1e9
  text = (
      "%s (%s parameters, %.3g GFLOP per image forward) on %s, %s compute (%s, loss scale %s) | %s: %d "
      "classes, %d train / %s test images of %d px, %s augmentation | global batch %s%s, %d steps (%d per "
      "epoch), %d per sess.run%s | %s lr %g %s, warm-up %d steps | writes to %s" %
      (plan.config.name, "%.2f M" %
       (params / 1e6) if params >= 1e6 else "{:,}".format(params), gflop, plan.device, tf.as_dtype(
           plan.compute_dtype).name, plan.precision_mode, plan.loss_scale_mode, plan.train_ds.name, plan.num_classes,
       len(plan.train_ds), len(plan.eval_ds) if plan.eval_ds is not None else "-", plan.image_size, plan.augment,
       distributed.describe_global_batch(distributed.Layout(plan.train_batch_size, plan.accum_steps, plan.num_ranks)),
       " (%s, rank %d)" % (plan.engine.name, plan.rank) if plan.num_ranks > 1 else "", plan.total_steps,
       plan.steps_per_epoch, plan.iterations, " in the graph" if plan.in_graph_loop else "", f.optimizer, plan.lr,
       f.lr_schedule, plan.lr_warmup_steps, os.path.abspath(plan.model_dir)))
  return {
      "event": "run",
      "text": text,
      "step": start_step,
      "total": plan.total_steps,
      "mode": f.mode,
      "model": plan.config.name,
      "parameters": params,
      "gflop_per_image": gflop,
      "device": plan.device,
      "batch_size": plan.train_batch_size,
      "accum_steps": plan.accum_steps,
      "global_batch_size": plan.train_batch_size * plan.accum_steps * plan.num_ranks,
      "num_ranks": plan.num_ranks,
      "engine": plan.engine.name,
      "rank": plan.rank,
      "timing_warmup_steps": warmup_steps,
      "time": time.time(),
      "flags": recorded_flags(f, plan)
  }


def recorded_flags(f, plan):
  """The flag lines of flags.txt: every trainer flag with a value, with defaults the plan adapted replaced by the
  values the run uses, so that --flagfile=flags.txt runs exactly this run."""
  adapted = {"iterations_per_loop": plan.iterations, "eval_batch_size": plan.eval_batch_size}
  if f.lr_warmup_epochs is None and f.lr_warmup_steps is None:
    adapted["lr_warmup_steps"] = plan.lr_warmup_steps
  lines = []
  for name in flags_lib.trainer_flag_names():
    if name in adapted and adapted[name] != getattr(f, name):
      lines.append("--%s=%s" % (name, adapted[name]))
    elif f[name].value is not None:
      lines.append(f[name].serialize())
  return lines


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
      if name not in _COSMETIC_FLAGS and before.get(name) != now.get(name)
  ]
  if changed:
    logging.warning("resuming with flags that differ from %s: %s; the run goes on with the new values",
                    os.path.join(model_dir, run_record.FLAGS_FILE), ", ".join(changed))


def finished_run(model_dir, total_steps):
  """The stored summary of a run in `model_dir` that already reached `total_steps`, or None."""
  latest = tf.train.latest_checkpoint(model_dir)
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
  flags_lib.check_flags(f)
  # Records from opening the datasets (listing and label warnings) are held until the run starts writing its log.
  log = monitors_lib.RunLog(f.model_dir)
  lock = None
  try:
    plan = make_plan(f)
    if plan.rank == 0:  # one writer per run folder: rank 0 of one run (the other ranks write nothing there)
      try:
        lock = run_lock.RunLock(plan.model_dir).acquire()
      except ValueError as e:  # RunLockedError included
        raise FlagError(str(e))
    if f.mode != "eval":
      done = finished_run(plan.model_dir, plan.total_steps)
      if done is not None:
        logging.info(
            "%s: already finished at step %d of %d; nothing to do (remove the folder, pass another "
            "--model_dir, or raise --train_steps/--num_epochs to train on)", plan.model_dir, done["step"],
            plan.total_steps)
        if "final_top1" in done:
          logging.info(log_format.summary_line(done))
        return done
    lines = recorded_flags(f, plan)
    if plan.rank == 0:
      # train.log is rank 0's; the other ranks' lines go to their console (launch.spawn files them as rank_<r>.log).
      log.start_file()
      if tf.train.latest_checkpoint(plan.model_dir):
        warn_about_changed_flags(plan.model_dir, lines)
      run_record.write_class_names(plan.model_dir, plan.class_names)
      run_record.write_flag_lines(plan.model_dir, lines)
    for note in plan.notes:
      (logging.warning if note.startswith("WARNING: ") else logging.info)("plan: %s", note.replace("WARNING: ", ""))
    return train(f, plan)
  finally:
    log.close()
    if lock is not None:
      lock.release()


def main(argv):
  del argv
  monitors_lib.use_compact_console()
  try:
    run(FLAGS)
  except FlagError as e:
    fail(str(e))
  except (callbacks_lib.TrainingStopped, distributed.RankMismatch, distributed.RankLost) as e:
    fail(str(e), code=1)


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
    return FLAGS(argv)
  except flags.Error as e:
    fail(str(e))


if __name__ == "__main__":
  # TF's own Python deprecation notices go to its logger, not to our log lines; keep only its errors.
  tf.get_logger().setLevel("ERROR")
  tf.disable_v2_behavior()
  app.run(main, flags_parser=parse_flags)
