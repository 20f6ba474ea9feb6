"""python -m tools.bench_soak: a long training run with its memory, file descriptors and shared memory sampled.

Starts `python -m launch.train` with the arguments after `--`, samples every --interval seconds the resident and
proportional memory (RSS, PSS) of the trainer and of each input worker process, their open file descriptors and
threads, and the entries of /dev/shm; after --minutes it sends SIGTERM (the preemption path: the trainer
checkpoints at the next loop boundary and exits 143) and checks that no process of the run and no new /dev/shm
entry is left. Prints a table per series: the value after --warmup_minutes, at the end, the peak and the growth
per hour fitted over the samples after warm-up (flat after warm-up is the goal). Samples go to --out_dir/soak.jsonl,
the curves to --plot.

  python -m tools.bench_soak --minutes 30 --plot docs/soak.png -- --model_dir=/tmp/soak --num_epochs=1000 ...

PSS splits pages shared between the trainer and its forked workers among them, so the PSS column adds up to the
run's memory where RSS counts copy-on-write pages once per process.
"""
import json
import os
import signal
import subprocess
import sys
import time

from absl import flags

from tools import bench_common
from tools import command
from tools.command import UsageError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
SHM = "/dev/shm"


def define_flags():
  """The command's flags (defined only when it runs as a command: importing it leaves absl's flags alone)."""
  flags.DEFINE_float("minutes", 30.0, "How long the trainer runs before it is sent SIGTERM (if it has not ended).")
  flags.DEFINE_float("interval", 10.0, "Seconds between two samples.")
  flags.DEFINE_float("warmup_minutes", 3.0, "Samples before this are left out of the growth fit.")
  flags.DEFINE_string("out_dir", "/tmp/vit_soak", "Folder of soak.jsonl and the trainer's output (trainer.log).")
  flags.DEFINE_string("plot", None, "Draw the sampled series against minutes into this PNG.")
  flags.DEFINE_float("grace", 120.0, "Seconds the trainer may take to exit after SIGTERM before it is killed.")


def _children(pid):
  """Direct and indirect child pids of pid (read from /proc/*/stat)."""
  parents = {}
  for name in os.listdir("/proc"):
    if not name.isdigit():
      continue
    try:
      with open("/proc/%s/stat" % name) as f:
        stat = f.read()
    except IOError:
      continue
    # The command name in parentheses may hold spaces; the fields after its closing bracket are fixed.
    parents[int(name)] = int(stat[stat.rindex(")") + 2:].split()[1])
  tree, frontier = [], [pid]
  while frontier:
    current = frontier.pop()
    kids = [child for child, parent in parents.items() if parent == current]
    tree.extend(kids)
    frontier.extend(kids)
  return tree


def _kb_field(path, name):
  try:
    with open(path) as f:
      for line in f:
        if line.startswith(name + ":"):
          return int(line.split()[1])
  except IOError:
    pass
  return None


def process_sample(pid):
  """RSS and PSS in MB, open fds and threads of pid; None once it has gone."""
  # The fds are counted before the memory is read: an exiting process releases its memory before it closes its
  # files, so a count taken on the way out (0 open) is caught by the VmRSS that is gone by then.
  try:
    fds = len(os.listdir("/proc/%d/fd" % pid))
  except OSError:
    return None
  rss = _kb_field("/proc/%d/status" % pid, "VmRSS")
  if rss is None:
    return None
  pss = _kb_field("/proc/%d/smaps_rollup" % pid, "Pss")
  threads = _kb_field("/proc/%d/status" % pid, "Threads")
  return {
      "pid": pid,
      "rss_mb": rss / 1024.0,
      "pss_mb": (pss if pss is not None else rss) / 1024.0,
      "fds": fds,
      "threads": threads
  }


def shm_entries():
  """(entries, MB) of /dev/shm."""
  try:
    names = os.listdir(SHM)
  except OSError:
    return 0, 0.0
  size = 0
  for name in names:
    try:
      size += os.stat(os.path.join(SHM, name)).st_size
    except OSError:
      pass
  return len(names), size / 1e6


def sample(trainer_pid, started):
  """One sample of the run: the trainer, each worker process and /dev/shm."""
  workers = [s for s in (process_sample(p) for p in _children(trainer_pid)) if s]
  entries, shm_mb = shm_entries()
  return {
      "minutes": (time.time() - started) / 60.0,
      "trainer": process_sample(trainer_pid),
      "workers": workers,
      "shm_entries": entries,
      "shm_mb": shm_mb
  }


def series(samples):
  """{name: [(minutes, value)]} of the quantities the table and the plot show."""
  out = {}

  def add(name, minutes, value):
    out.setdefault(name, []).append((minutes, value))

  for s in samples:
    if not s["trainer"]:
      continue
    m = s["minutes"]
    add("trainer RSS MB", m, s["trainer"]["rss_mb"])
    add("trainer PSS MB", m, s["trainer"]["pss_mb"])
    add("trainer fds", m, s["trainer"]["fds"])
    add("trainer threads", m, s["trainer"]["threads"])
    add("workers", m, len(s["workers"]))
    for rank, w in enumerate(sorted(s["workers"], key=lambda w: w["pid"])):
      add("worker %d RSS MB" % rank, m, w["rss_mb"])
      add("worker %d PSS MB" % rank, m, w["pss_mb"])
      add("worker %d fds" % rank, m, w["fds"])
    add("run PSS MB", m, s["trainer"]["pss_mb"] + sum(w["pss_mb"] for w in s["workers"]))
    add("/dev/shm entries", m, s["shm_entries"])
  return out


def slope_per_hour(points):
  """Least-squares slope of value over time, per hour (0 for fewer than two points)."""
  if len(points) < 2:
    return 0.0
  n = float(len(points))
  mean_t = sum(t for t, _ in points) / n
  mean_v = sum(v for _, v in points) / n
  var = sum((t - mean_t)**2 for t, _ in points)
  if var == 0:
    return 0.0
  return 60.0 * sum((t - mean_t) * (v - mean_v) for t, v in points) / var


def summary_rows(samples, warmup_minutes):
  """(name, after warm-up, end, peak, growth per hour) of every series."""
  rows = []
  for name, points in series(samples).items():
    settled = [p for p in points if p[0] >= warmup_minutes] or points[-1:]
    rows.append((name, settled[0][1], points[-1][1], max(v for _, v in points), slope_per_hour(settled)))
  return rows


def plot(samples, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  data = series(samples)
  panels = [("resident memory (PSS, MB)", [n for n in data if n.endswith("PSS MB")]),
            ("open file descriptors", [n for n in data if n.endswith("fds")]),
            ("threads, workers, /dev/shm entries", ["trainer threads", "workers", "/dev/shm entries"])]
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  for axis, (title, names) in zip(axes, panels):
    for name in names:
      if name in data:
        axis.plot([t for t, _ in data[name]], [v for _, v in data[name]], label=name)
    axis.set_title(title)
    axis.set_xlabel("minutes")
    axis.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=90)


def _model_dir(args):
  for arg in args:
    if arg.startswith("--model_dir="):
      return arg.split("=", 1)[1]
  return None


def _loops_run(model_dir):
  """(last step, train records, eval records) from the run folder's metrics.jsonl."""
  path = os.path.join(model_dir or "", "metrics.jsonl")
  step, train, evals = 0, 0, 0
  if not os.path.exists(path):
    return step, train, evals
  with open(path) as f:
    for line in f:
      try:
        record = json.loads(line)
      except ValueError:
        continue
      if record.get("event") == "train":
        train += 1
        step = record.get("step", step)
      elif record.get("event") == "eval":
        evals += 1
  return step, train, evals


def run(argv):
  trainer_args = argv[1:]
  if not trainer_args:
    raise UsageError("no trainer arguments: put launch.train's flags after --, e.g. -- --model_dir=/tmp/soak")
  if FLAGS.minutes <= 0 or FLAGS.interval <= 0:
    raise UsageError("--minutes and --interval must be positive")
  os.makedirs(FLAGS.out_dir, exist_ok=True)
  shm_before = set(os.listdir(SHM)) if os.path.isdir(SHM) else set()
  print(bench_common.machine_line())
  print(
      bench_common.timed_line("python -m launch.train %s for %.0f min, sampled every %.0f s" %
                              (" ".join(trainer_args), FLAGS.minutes, FLAGS.interval)))
  log = open(os.path.join(FLAGS.out_dir, "trainer.log"), "w")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  trainer = subprocess.Popen([sys.executable, "-m", "launch.train"] + trainer_args, cwd=REPO, env=env, stdout=log,
                             stderr=subprocess.STDOUT)
  started = time.time()
  samples, seen_pids, stopped = [], set(), False
  with open(os.path.join(FLAGS.out_dir, "soak.jsonl"), "w") as out:
    while trainer.poll() is None:
      if not stopped and time.time() - started >= 60.0 * FLAGS.minutes:
        trainer.send_signal(signal.SIGTERM)
        stopped = time.time()
      if stopped and time.time() - stopped > FLAGS.grace:
        trainer.kill()
      s = sample(trainer.pid, started)
      if s["trainer"]:
        samples.append(s)
        seen_pids.update(w["pid"] for w in s["workers"])
        out.write(json.dumps(s) + "\n")
        out.flush()
      time.sleep(FLAGS.interval)
  log.close()
  time.sleep(1.0)
  left = sorted(p for p in seen_pids if os.path.exists("/proc/%d" % p))
  shm_new = sorted((set(os.listdir(SHM)) if os.path.isdir(SHM) else set()) - shm_before)
  step, train_records, evals = _loops_run(_model_dir(trainer_args))
  print("trainer exit code %d after %.1f min (%s); %d samples; last step %d, %d train log records, %d evals" %
        (trainer.returncode, (time.time() - started) / 60.0, "stopped by SIGTERM" if stopped else "ended by itself",
         len(samples), step, train_records, evals))
  table = bench_common.Table([("series", "%s"), ("after %.0f min" % FLAGS.warmup_minutes, "%.1f"), ("end", "%.1f"),
                              ("peak", "%.1f"), ("growth / hour", "%+.1f")])
  table.header()
  for row in summary_rows(samples, FLAGS.warmup_minutes):
    table.row(*row)
  print("worker processes left after exit: %s" % (", ".join(map(str, left)) or "none"))
  print("/dev/shm entries left by the run: %s" % (", ".join(shm_new) or "none"))
  if FLAGS.plot:
    plot(samples, FLAGS.plot)
    print("plot: %s" % FLAGS.plot)


if __name__ == "__main__":
  define_flags()
  command.run_command(run)
