"""python -m tools.bench_distributed: what data parallelism costs on this machine, per model and engine.

For each model and engine it runs, as separate processes with one core and one thread each (one "device" per
rank):
  * the trainer's N-step loop (launch.train_graph, in-graph while_loop, synthetic data) on 1 rank and on 2 ranks
    at the same per-rank batch: seconds per step, and the 2-rank efficiency t(1) / t(2);
  * the gradient all-reduce alone (the seam's packed all-reduce of every trainable weight's size), inside an
    in-graph loop and one per sess.run, for several bucket sizes: seconds per all-reduce and the algorithm
    bandwidth (gradient bytes / seconds).
Engines: collective (both stacks), horovod (where installed), launched by launch.spawn's helpers. Prints a Markdown
table; the numbers in docs/benchmarks.md come from one run of it.

  python -m tools.bench_distributed --models ViT-Ti/16,ViT-B/16 --batch_sizes 8,2 --engines collective,horovod
  python -m tools.bench_distributed --scaling [--compute_s 0.08]

Each rank is this command again with --worker (and --engine, --model, --batch_size), started by the command itself.
"""
import json
import os
import subprocess
import sys
import time

from absl import flags
import numpy as np

from tools import bench_common
from tools import command
from tools.command import UsageError

_RESULT = "BENCH_RESULT "
VIT_B16_PARAMS = 86567656  # ViT-B/16 with a 1000-class head (vit_raw.model.count_parameters)
ENGINES = ("collective", "horovod")
FLAGS = flags.FLAGS


def define_flags():
  """The command's flags (defined only when it runs as a command: importing it leaves absl's flags alone)."""
  flags.DEFINE_list("models", ["ViT-Ti/16", "ViT-B/16"], "Model variants to time, comma-separated.")
  flags.DEFINE_list("batch_sizes", ["8", "2"], "Per-rank batch of each of --models, comma-separated, one per model.")
  flags.DEFINE_list(
      "engines", None, "Data-parallel engines of the 2-rank runs, some of %s (default: collective, "
      "and horovod where it is installed)." % ", ".join(ENGINES))
  flags.DEFINE_integer("image_size", 224, "Square input image side in pixels.")
  flags.DEFINE_integer("iterations", 3, "Training steps per sess.run (the in-graph loop).")
  flags.DEFINE_integer("repeats", 3, "Timed sess.runs of each measurement; the median is reported.")
  flags.DEFINE_float("bucket_mb", None, "All-reduce bucket size (MB) of the training loop (default: the engine's, "
                     "as launch.train).")
  flags.DEFINE_list(
      "allreduce_buckets", ["0", "1", "4", "16", "64", "100000"], "Bucket sizes (MB) of the "
      "all-reduce-alone runs, comma-separated; 0 = one collective per tensor.")
  flags.DEFINE_float("timeout", 1200, "Seconds each set of rank processes may take before they are killed.")
  flags.DEFINE_bool("scaling", False, "Print the on-paper scaling table of ViT-B/16 (docs/benchmarks.md) and exit.")
  flags.DEFINE_float("compute_s", 0.08, "--scaling: compute seconds per step per device (default: batch 64 at "
                     "800 img/s).")
  flags.DEFINE_float("scaling_bucket_mb", 64.0, "--scaling: all-reduce bucket size (MB).")
  flags.DEFINE_bool(
      "worker", False, "Internal: run as one rank of a measurement (the command starts these "
      "processes itself) and print its result as one JSON line.")
  flags.DEFINE_enum("engine", "none", ("none",) + ENGINES, "Internal, with --worker: the rank's engine.")
  flags.DEFINE_string("model", None, "Internal, with --worker: the rank's model variant.")
  flags.DEFINE_integer("batch_size", None, "Internal, with --worker: the rank's batch.")


class Settings(object):
  """What every rank of every measurement shares, read from the flags once.

  Attributes:
    image_size: square input side in pixels.
    iterations: training steps per sess.run.
    repeats: timed sess.runs per measurement (the median is kept).
    bucket_mb: the training loop's all-reduce bucket (MB), None for the engine's default.
    allreduce_buckets: bucket sizes (MB, floats) of the all-reduce-alone runs.
    timeout: seconds a set of rank processes may take.
  """

  def __init__(self, image_size, iterations, repeats, bucket_mb, allreduce_buckets, timeout):
    self.image_size = image_size
    self.iterations = iterations
    self.repeats = repeats
    self.bucket_mb = bucket_mb
    self.allreduce_buckets = allreduce_buckets
    self.timeout = timeout

  def worker_flags(self):
    """The flags that give a rank process the same settings."""
    command_line = [
        "--image_size=%d" % self.image_size,
        "--iterations=%d" % self.iterations,
        "--repeats=%d" % self.repeats,
        "--allreduce_buckets=%s" % ",".join(repr(b) for b in self.allreduce_buckets),
        "--timeout=%r" % self.timeout
    ]
    if self.bucket_mb is not None:
      command_line.append("--bucket_mb=%r" % self.bucket_mb)
    return command_line


def settings_from_flags():
  for name in ("image_size", "iterations", "repeats"):
    if FLAGS[name].value < 1:
      raise UsageError("--%s=%d: must be at least 1" % (name, FLAGS[name].value))
  try:
    buckets = [float(b) for b in FLAGS.allreduce_buckets if b.strip()]
  except ValueError:
    buckets = []
  if not buckets or min(buckets) < 0:
    raise UsageError("--allreduce_buckets=%s: expected comma-separated sizes in MB (0 or more), e.g. 0,4,64" %
                     ",".join(FLAGS.allreduce_buckets))
  if FLAGS.bucket_mb is not None and FLAGS.bucket_mb < 0:
    raise UsageError("--bucket_mb=%g: must not be negative" % FLAGS.bucket_mb)
  return Settings(FLAGS.image_size, FLAGS.iterations, FLAGS.repeats, FLAGS.bucket_mb, buckets, FLAGS.timeout)


def _worker(settings, engine_name, model_name, batch_size):
  """One rank: builds and times everything, prints one JSON line (rank 0)."""
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  tf.disable_v2_behavior()
  from launch import distributed  # pylint: disable=g-import-not-at-top
  from launch import plan as plan_lib  # pylint: disable=g-import-not-at-top
  from launch import train_graph  # pylint: disable=g-import-not-at-top
  from vit_raw.configs import get_config  # pylint: disable=g-import-not-at-top
  from vit_raw.cpu_config import fast_cpu_config  # pylint: disable=g-import-not-at-top
  from vit_raw.model import count_parameters  # pylint: disable=g-import-not-at-top

  engine = distributed.resolve_engine(engine_name, "cpu")
  config = engine.configure(fast_cpu_config(intra_op_threads=1, inter_op_threads=2))
  if hasattr(engine, "start"):
    engine.start(config)
  model = get_config(model_name)
  size, classes = settings.image_size, 100
  with tf.device(engine.device):
    tf.set_random_seed(0)

    plan = plan_lib.synthetic_plan(model, size, classes, batch_size, iterations=settings.iterations)
    rs = np.random.RandomState(engine.rank)
    data = tf.data.Dataset.from_tensors((rs.randint(0, 256, (batch_size, size, size, 3)).astype(np.uint8),
                                         rs.randint(0, classes,
                                                    batch_size).astype(np.int32), np.ones(batch_size,
                                                                                          np.float32))).repeat()
    iterator = tf.data.make_initializable_iterator(data)
    parallel = distributed.DataParallel(engine, settings.bucket_mb)
    loop = train_graph.build_training(plan, train_graph.BatchSource(iterator), parallel).loop
    weights = tf.trainable_variables()
    reduce_loops = {}
    if parallel.active:
      for bucket in settings.allreduce_buckets:
        seam = distributed.DataParallel(engine, bucket)
        reduce_loops[bucket] = _allreduce_loop(tf, seam, weights)
  result = {
      "rank": engine.rank,
      "size": engine.size,
      "params": count_parameters(model, classes, size),
      "kernels": bench_common.kernels_text(plan.model)
  }
  with tf.Session(engine.target, config=config) as sess:
    sess.run([tf.global_variables_initializer(), iterator.initializer])
    sess.run(loop.fetches)  # graph optimisation, first collectives
    times = []
    for _ in range(settings.repeats):
      times.append(bench_common.seconds(lambda: sess.run(loop.fetches)) / settings.iterations)
    result["step_s"] = float(np.median(times))
    result["allreduce"] = {}
    for bucket, (count, fetch) in reduce_loops.items():
      row = {}
      for name, n in (("in_loop_s", settings.iterations * 2), ("per_run_s", 1)):
        sess.run(fetch, {count: n})
        runs = []
        for _ in range(settings.repeats):
          runs.append(bench_common.seconds(lambda: sess.run(fetch, {count: n})) / n)
        row[name] = float(np.median(runs))
      result["allreduce"][str(bucket)] = row
  if engine.rank == 0:
    print(_RESULT + json.dumps(result))
    sys.stdout.flush()
  time.sleep(1.0)  # a peer may still be pulling this rank's share of the last collective


def _allreduce_loop(tf, seam, weights):
  """(count placeholder, op) running `count` all-reduces of gradient-sized tensors (the weights' reads) in a
  while_loop; only a scalar per tensor leaves the loop, so the time is the all-reduce's."""
  count = tf.placeholder(tf.int32, [])

  def body(i, acc):
    with tf.control_dependencies([i, acc]):
      reads = [w.read_value() for w in weights]
    reduced, _ = seam.allreduce_gradients(reads)
    return i + 1, acc + tf.add_n([tf.reshape(r, [-1])[0] for r in reduced])

  out = tf.while_loop(lambda i, acc: i < count, body, [tf.constant(0), tf.constant(0.0)], parallel_iterations=1,
                      back_prop=False)
  return count, out


def _run_ranks(settings, model_name, batch_size, engine, ranks):
  """Runs the worker of `model_name` at `batch_size` on `ranks` processes with `engine`; returns rank 0's result."""
  from launch import spawn  # pylint: disable=g-import-not-at-top
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  command_line = [
      sys.executable, "-m", "tools.bench_distributed", "--worker",
      "--model=%s" % model_name,
      "--batch_size=%d" % batch_size
  ] + settings.worker_flags()
  env = dict(os.environ, PYTHONPATH=repo, TF_CPP_MIN_LOG_LEVEL="2")
  for name in ("TF_CONFIG", "RANK_ID", "RANK_SIZE"):
    env.pop(name, None)
  cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))

  def pin(r):
    return lambda: os.sched_setaffinity(0, {cores[r % len(cores)]}) if hasattr(os, "sched_setaffinity") else None

  if ranks == 1:
    procs = [
        subprocess.Popen(command_line + ["--engine=none"], cwd=repo, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, universal_newlines=True, preexec_fn=pin(0))
    ]
  elif engine == "horovod":
    horovodrun = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    procs = [
        subprocess.Popen(
            [horovodrun, "-np", str(ranks), "-H", "localhost:%d" % ranks, "--gloo"] + command_line +
            ["--engine=horovod"], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            universal_newlines=True)
    ]
  else:
    ports = spawn.free_ports(ranks)
    procs = [
        subprocess.Popen(command_line + ["--engine=collective"], cwd=repo,
                         env=dict(env, TF_CONFIG=spawn.tf_config(ports, r)), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, universal_newlines=True, preexec_fn=pin(r)) for r in range(ranks)
    ]
  outputs = spawn.outputs_of(procs, settings.timeout)
  for text in outputs:
    for line in text.splitlines():
      at = line.find(_RESULT)
      if at >= 0:
        return json.loads(line[at + len(_RESULT):])
  raise RuntimeError("no result from %d rank(s) of %s:\n%s" % (ranks, engine, "\n".join(o[-3000:] for o in outputs)))


def scaling_table(params, compute_s, devices=(8, 64, 512), links_gbit=(25, 100, 200), link_efficiency=0.8,
                  latency_s=5e-6, bucket_mb=64.0, backward_share=2.0 / 3):
  """Markdown rows of the expected scaling efficiency of data-parallel training on paper (ring all-reduce).

  A step computes for `compute_s` seconds on every device, then all-reduces 4 (fp32) or 2 (fp16) bytes per
  parameter: a ring moves 2 (N-1)/N of the buffer through each link at link_efficiency x the line rate, plus
  2 (N-1) hops of `latency_s` per bucket of `bucket_mb`. Without overlap the step is compute + all-reduce; with
  overlap the all-reduce of early buckets runs during backprop (`backward_share` of the compute), and only what
  does not fit behind it is exposed, but never less than the last bucket (the first layers' gradients come last).
  Efficiency = compute / step time.
  """

  def ring(nbytes, n, gbit, buckets):
    return 2.0 * (n - 1) / n * nbytes / (gbit / 8.0 * 1e9 * link_efficiency) + buckets * 2 * (n - 1) * latency_s

  rows = []
  for n in devices:
    for gbit in links_gbit:
      cells = []
      for nbytes in (4, 2):
        size = params * nbytes
        bucket = int(bucket_mb * 2**20)
        allreduce = ring(size, n, gbit, max(1, -(-size // bucket)))
        exposed_overlap = max(allreduce - backward_share * compute_s, ring(min(size, bucket), n, gbit, 1))
        cells += [compute_s / (compute_s + allreduce), compute_s / (compute_s + exposed_overlap)]
        if nbytes == 4:
          fp32_allreduce = allreduce
      rows.append("| %d | %d Gb/s | %.0f ms | %s |" %
                  (n, gbit, 1000 * fp32_allreduce, " | ".join("%.0f %%" % (100 * c) for c in cells)))
  return rows


def _bucket_name(mb):
  return "per tensor" if mb == 0 else "one buffer" if mb >= 1e4 else "%g MB" % mb


def print_scaling():
  bench_common.Table([(title, "%s") for title in ("devices", "link", "fp32 all-reduce", "fp32", "fp32 + overlap",
                                                  "fp16", "fp16 + overlap")]).header()
  print("\n".join(scaling_table(VIT_B16_PARAMS, FLAGS.compute_s, bucket_mb=FLAGS.scaling_bucket_mb)))


def measure(settings, models, engines):
  """Times every (model, batch) of `models` on 1 rank and on 2 ranks of each engine and prints the table, then what
  was timed and on what machine."""
  from launch.distributed import DEFAULT_BUCKET_MB  # pylint: disable=g-import-not-at-top
  import tensorflow as tf_top  # pylint: disable=g-import-not-at-top
  stack = "TF %s" % tf_top.__version__
  table = bench_common.Table([
      ("model", "%s"), ("params", "%.1f M"), ("stack / engine", "%s"), ("batch per rank", "%d"),
      ("step 1 rank (s)", "%.3f"), ("step 2 ranks (s)", "%.3f"), ("efficiency", "%.0f %%"),
      ("all-reduce in loop, default bucket (s)", "%.3f"), ("GB/s", "%.2f"), ("the same per sess.run (s)", "%.3f"),
      ("in loop by bucket: %s (s)" % " / ".join(_bucket_name(b) for b in settings.allreduce_buckets), "%s")
  ])
  table.header()
  timed = []
  for model_name, batch in models:
    one = _run_ranks(settings, model_name, batch, None, 1)
    timed.append("%s (%s)" % (model_name, one["kernels"]))
    for engine in engines:
      two = _run_ranks(settings, model_name, batch, engine, 2)
      gbytes = two["params"] * 4 / 1e9
      bucket = str(float(settings.bucket_mb if settings.bucket_mb is not None else DEFAULT_BUCKET_MB[engine]))
      main_bucket = two["allreduce"].get(bucket, two["allreduce"][str(settings.allreduce_buckets[0])])
      buckets = " / ".join("%.3f" % two["allreduce"][str(b)]["in_loop_s"] for b in settings.allreduce_buckets)
      table.row(model_name, two["params"] / 1e6, "%s %s" % (stack, engine), batch, one["step_s"], two["step_s"],
                100.0 * one["step_s"] / two["step_s"], main_bucket["in_loop_s"], gbytes / main_bucket["in_loop_s"],
                main_bucket["per_run_s"], buckets)
  print(
      bench_common.timed_line("the trainer's loop (launch.train_graph.build_training), %d steps per sess.run at %d "
                              "px, of %s" % (settings.iterations, settings.image_size, "; ".join(timed))))
  print(bench_common.machine_line(("TensorFlow", tf_top.__version__)))


def run(argv):
  if len(argv) > 1:
    raise UsageError("unexpected arguments %s" % " ".join(argv[1:]))
  if FLAGS.scaling:
    print_scaling()
    return
  settings = settings_from_flags()
  if FLAGS.worker:
    if not FLAGS.model or not FLAGS.batch_size:
      raise UsageError("--worker needs --model and --batch_size (the command passes them to its ranks)")
    _worker(settings, FLAGS.engine, FLAGS.model, FLAGS.batch_size)
    return
  try:
    batches = [int(b) for b in FLAGS.batch_sizes]
  except ValueError:
    raise UsageError("--batch_sizes=%s: expected whole numbers, one per model" % ",".join(FLAGS.batch_sizes))
  if len(batches) != len(FLAGS.models) or min(batches or [0]) < 1:
    raise UsageError("--batch_sizes=%s: expected one batch of at least 1 per model of --models=%s" %
                     (",".join(FLAGS.batch_sizes), ",".join(FLAGS.models)))
  from launch import spawn  # pylint: disable=g-import-not-at-top
  engines = FLAGS.engines or spawn.installed_engines()
  unknown = sorted(set(engines) - set(ENGINES))
  if unknown:
    raise UsageError("--engines: unknown %s; expected some of %s" % (", ".join(unknown), ", ".join(ENGINES)))
  measure(settings, list(zip(FLAGS.models, batches)), engines)


if __name__ == "__main__":
  define_flags()
  command.run_command(run)
