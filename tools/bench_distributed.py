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
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

_RESULT = "BENCH_RESULT "
VIT_B16_PARAMS = 86567656  # ViT-B/16 with a 1000-class head (vit_raw.model.count_parameters)


def _worker(args):
  """One rank: builds and times everything, prints one JSON line (rank 0)."""
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  tf.disable_v2_behavior()
  from launch import distributed  # pylint: disable=g-import-not-at-top
  from launch import plan as plan_lib  # pylint: disable=g-import-not-at-top
  from launch import train_graph  # pylint: disable=g-import-not-at-top
  from vit_raw.configs import get_config  # pylint: disable=g-import-not-at-top
  from vit_raw.cpu_config import fast_cpu_config  # pylint: disable=g-import-not-at-top
  from vit_raw.model import count_parameters  # pylint: disable=g-import-not-at-top

  engine = distributed.resolve_engine(args.engine, "cpu")
  config = engine.configure(fast_cpu_config(intra_op_threads=1, inter_op_threads=2))
  if hasattr(engine, "start"):
    engine.start(config)
  model = get_config(args.model)
  size, classes = args.image_size, 100
  with tf.device(engine.device):
    tf.set_random_seed(0)

    plan = plan_lib.synthetic_plan(model, size, classes, args.batch_size, iterations=args.iterations)
    rs = np.random.RandomState(engine.rank)
    data = tf.data.Dataset.from_tensors(
        (rs.randint(0, 256, (args.batch_size, size, size, 3)).astype(np.uint8),
         rs.randint(0, classes, args.batch_size).astype(np.int32), np.ones(args.batch_size, np.float32))).repeat()
    iterator = tf.data.make_initializable_iterator(data)
    parallel = distributed.DataParallel(engine, args.bucket_mb)
    loop = train_graph.build_training(plan, train_graph.BatchSource(iterator), parallel).loop
    weights = tf.trainable_variables()
    reduce_loops = {}
    if parallel.active:
      for bucket in args.allreduce_buckets:
        seam = distributed.DataParallel(engine, bucket)
        reduce_loops[bucket] = _allreduce_loop(tf, seam, weights)
  result = {
      "rank": engine.rank,
      "size": engine.size,
      "params": count_parameters(model, classes, size),
      "kernels": "%s, lean %s" % (plan.model.kernels, ",".join(plan.model.lean_backward) or "none")
  }
  with tf.Session(engine.target, config=config) as sess:
    sess.run([tf.global_variables_initializer(), iterator.initializer])
    sess.run(loop.fetches)  # graph optimisation, first collectives
    times = []
    for _ in range(args.repeats):
      start = time.time()
      sess.run(loop.fetches)
      times.append((time.time() - start) / args.iterations)
    result["step_s"] = float(np.median(times))
    result["allreduce"] = {}
    for bucket, (count, fetch) in reduce_loops.items():
      row = {}
      for name, n in (("in_loop_s", args.iterations * 2), ("per_run_s", 1)):
        sess.run(fetch, {count: n})
        runs = []
        for _ in range(args.repeats):
          start = time.time()
          sess.run(fetch, {count: n})
          runs.append((time.time() - start) / n)
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


def _run_ranks(args, engine, ranks, timeout):
  """Runs the worker on `ranks` processes with `engine`; returns rank 0's result dict."""
  from launch import spawn  # pylint: disable=g-import-not-at-top
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  command = [
      sys.executable, "-m", "tools.bench_distributed", "--worker", "--model", args.model_now, "--batch_size",
      str(args.batch_now), "--image_size",
      str(args.image_size), "--iterations",
      str(args.iterations), "--repeats",
      str(args.repeats), "--allreduce_buckets", ",".join(str(b) for b in args.allreduce_buckets)
  ]
  if args.bucket_mb is not None:
    command += ["--bucket_mb", str(args.bucket_mb)]
  env = dict(os.environ, PYTHONPATH=repo, TF_CPP_MIN_LOG_LEVEL="2")
  for name in ("TF_CONFIG", "RANK_ID", "RANK_SIZE"):
    env.pop(name, None)
  cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))

  def pin(r):
    return lambda: os.sched_setaffinity(0, {cores[r % len(cores)]}) if hasattr(os, "sched_setaffinity") else None

  if ranks == 1:
    procs = [
        subprocess.Popen(command + ["--engine", "none"], cwd=repo, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, universal_newlines=True, preexec_fn=pin(0))
    ]
  elif engine == "horovod":
    horovodrun = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    procs = [
        subprocess.Popen(
            [horovodrun, "-np", str(ranks), "-H", "localhost:%d" % ranks, "--gloo"] + command + ["--engine", "horovod"],
            cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    ]
  else:
    ports = spawn.free_ports(ranks)
    procs = [
        subprocess.Popen(command + ["--engine", "collective"], cwd=repo, env=dict(env,
                                                                                  TF_CONFIG=spawn.tf_config(ports, r)),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, preexec_fn=pin(r))
        for r in range(ranks)
    ]
  outputs = spawn.outputs_of(procs, timeout)
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


def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m tools.bench_distributed", description=__doc__.split("\n")[0])
  parser.add_argument("--models", default="ViT-Ti/16,ViT-B/16")
  parser.add_argument("--batch_sizes", default="8,2", help="per-rank batch, one per model")
  parser.add_argument("--engines", default=None, help="default: collective, and horovod where installed")
  parser.add_argument("--image_size", type=int, default=224)
  parser.add_argument("--iterations", type=int, default=3, help="steps per sess.run (in-graph loop)")
  parser.add_argument("--repeats", type=int, default=3, help="timed sess.runs; the median is reported")
  parser.add_argument("--bucket_mb", type=float, default=None,
                      help="the training loop's all-reduce buckets (default: the engine's, as launch.train)")
  parser.add_argument("--allreduce_buckets", default="0,1,4,16,64,100000",
                      help="bucket sizes (MB) of the all-reduce-alone runs; 0 = one collective per tensor")
  parser.add_argument("--timeout", type=float, default=1200)
  parser.add_argument("--scaling", action="store_true",
                      help="print the on-paper scaling table of ViT-B/16 (docs/benchmarks.md) and exit")
  parser.add_argument("--compute_s", type=float, default=0.08,
                      help="--scaling: compute seconds per step per device (default: batch 64 at 800 img/s)")
  parser.add_argument("--scaling_bucket_mb", type=float, default=64.0, help="--scaling: all-reduce bucket size")
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--engine", default="none", help=argparse.SUPPRESS)
  parser.add_argument("--model", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--batch_size", type=int, default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  args.allreduce_buckets = [float(b) for b in str(args.allreduce_buckets).split(",") if b.strip()]
  if args.worker:
    _worker(args)
    return 0
  if args.scaling:
    print("| devices | link | fp32 all-reduce | fp32 | fp32 + overlap | fp16 | fp16 + overlap |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(scaling_table(VIT_B16_PARAMS, args.compute_s, bucket_mb=args.scaling_bucket_mb)))
    return 0
  from launch import spawn  # pylint: disable=g-import-not-at-top
  engines = args.engines.split(",") if args.engines else ["collective"
                                                         ] + (["horovod"] if spawn.horovod_installed() else [])
  import tensorflow as tf_top  # pylint: disable=g-import-not-at-top
  stack = "TF %s" % tf_top.__version__
  names = " / ".join(
      "per tensor" if b == 0 else "one buffer" if b >= 1e4 else "%g MB" % b for b in args.allreduce_buckets)
  print("| model | params | stack / engine | batch per rank | step 1 rank (s) | step 2 ranks (s) | efficiency | "
        "all-reduce in loop, default bucket (s) | GB/s | the same per sess.run (s) | in loop by bucket: %s (s) |" %
        names)
  print("|---|---|---|---|---|---|---|---|---|---|---|")
  for model, batch in zip(args.models.split(","), [int(b) for b in args.batch_sizes.split(",")]):
    args.model_now, args.batch_now = model, batch
    one = _run_ranks(args, None, 1, args.timeout)
    print("timed: the trainer's loop (launch.train_graph.build_training) of %s, kernels %s" % (model, one["kernels"]))
    for engine in engines:
      two = _run_ranks(args, engine, 2, args.timeout)
      gbytes = two["params"] * 4 / 1e9
      from launch.distributed import DEFAULT_BUCKET_MB  # pylint: disable=g-import-not-at-top
      bucket = str(float(args.bucket_mb if args.bucket_mb is not None else DEFAULT_BUCKET_MB[engine]))
      main_bucket = two["allreduce"].get(bucket, two["allreduce"][str(args.allreduce_buckets[0])])
      buckets = " / ".join("%.3f" % two["allreduce"][str(b)]["in_loop_s"] for b in args.allreduce_buckets)
      print("| %s | %.1f M | %s %s | %d | %.3f | %.3f | %.0f %% | %.3f | %.2f | %.3f | %s |" %
            (model, two["params"] / 1e6, stack, engine, batch, one["step_s"], two["step_s"],
             100.0 * one["step_s"] / two["step_s"], main_bucket["in_loop_s"], gbytes / main_bucket["in_loop_s"],
             main_bucket["per_run_s"], buckets))
      sys.stdout.flush()
  return 0


if __name__ == "__main__":
  sys.exit(main())
