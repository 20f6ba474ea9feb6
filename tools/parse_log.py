"""python -m tools.parse_log LOG... : accuracy, throughput, loss and step time of launch.train runs.

Reads the trainer's documented line format (launch/log_format.py) from train logs (model_dir/train.log, the
launch scripts' train_<id>.log, or captured stderr). Per log it prints the final and best top-1, the final top-5,
the mean and median img/s of the training loops after warm-up, the final loss and the median step time.
  --json          one JSON object per log on stdout (for scripts)
The mean img/s is images over seconds of the timed loops (as the trainer's summary), the median is over loops.
  --plot out.png  loss, top-1 and img/s against step, one line per log (matplotlib, Agg backend)
  --get KEY       only one number of the last log (the launch scripts use it: --get mean_ips)
  --warmup_steps  loops ending at or before this step are warm-up (default 50: tensorpack's "never look at the
                  first 50 iterations"); when every loop is warm-up, the last half of the loops is used instead.
A resumed run appends to the same train.log; only the last record per step is kept, so the curve has one point
per step.
"""
import argparse
import json
import math
import sys

from launch import log_format


def read_records(path):
  """(train records, eval records, summary records) from one log, one per step (the last one wins)."""
  train, evals, summaries = {}, {}, []
  with open(path, errors="replace") as f:
    for line in f:
      parsed = log_format.parse_line(line)
      if parsed is None:
        continue
      kind, record = parsed
      if kind == "train":
        train[record["step"]] = record
      elif kind == "eval":
        evals[record["step"]] = record
      else:
        summaries.append(record)
  return [train[k] for k in sorted(train)], [evals[k] for k in sorted(evals)], summaries


def _median(values):
  values = sorted(values)
  if not values:
    return float("nan")
  mid = len(values) // 2
  return values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])


def _time_weighted_ips(train, timed):
  """Images over seconds of the timed loops (what the trainer's summary reports), not a mean of per-loop rates."""
  steps_before = dict(zip([r["step"] for r in train[1:]], [r["step"] for r in train[:-1]]))
  images = seconds = 0.0
  for r in timed:
    n = r["step"] - steps_before.get(r["step"], 0)
    loop_seconds = n * r["step_ms"] / 1000.0
    images += r["ips"] * loop_seconds
    seconds += loop_seconds
  return images / seconds if seconds else float("nan")


def summarize(path, warmup_steps=50):
  """A dict of the run's numbers (NaN where the log has no such line)."""
  train, evals, summaries = read_records(path)
  nan = float("nan")
  timed = [r for r in train if r["step"] > warmup_steps] or train[len(train) // 2:]
  top1 = [e["top1"] for e in evals]
  result = {
      "log": path,
      "steps": train[-1]["step"] if train else 0,
      "final_top1": top1[-1] if top1 else nan,
      "best_top1": max(top1) if top1 else nan,
      "final_top5": evals[-1]["top5"] if evals else nan,
      "mean_ips": _time_weighted_ips(train, timed),
      "median_ips": _median([r["ips"] for r in timed]),
      "final_loss": train[-1]["loss"] if train else nan,
      "median_step_ms": _median([r["step_ms"] for r in timed]),
      "skipped_steps": train[-1]["skipped"] if train else 0,
      "wall_s": summaries[-1]["wall"] if summaries else nan,
      "trainer_mean_ips": summaries[-1]["mean_ips"] if summaries else nan,
  }
  return result


def _fmt(value, digits):
  return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else "%.*f" % (digits, value)


def print_table(results, out=sys.stdout):
  for r in results:
    out.write("%s\n" % r["log"])
    out.write("  accuracy  final %s  best %s  (top-5 %s)\n" %
              (_fmt(r["final_top1"], 4), _fmt(r["best_top1"], 4), _fmt(r["final_top5"], 4)))
    out.write("  img/s     mean %s  median %s  (warm-up excluded)\n" %
              (_fmt(r["mean_ips"], 1), _fmt(r["median_ips"], 1)))
    out.write(
        "  loss      final %s   step time %s ms (median)   steps %d   skipped %d   wall %s s\n" %
        (_fmt(r["final_loss"], 4), _fmt(r["median_step_ms"], 2), r["steps"], r["skipped_steps"], _fmt(r["wall_s"], 1)))


def plot(paths, out_path):
  """Draws loss, top-1 and img/s against step for each log side by side into out_path (PNG)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  for path in paths:
    train, evals, _ = read_records(path)
    label = path
    axes[0].plot([r["step"] for r in train], [r["loss"] for r in train], label=label)
    axes[1].plot([e["step"] for e in evals], [e["top1"] for e in evals], marker=".", label=label)
    axes[2].plot([r["step"] for r in train], [r["ips"] for r in train], label=label)
  for ax, title in zip(axes, ("training loss", "test top-1", "img/s")):
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize="small")
  fig.tight_layout()
  fig.savefig(out_path, dpi=80)
  plt.close(fig)
  return out_path


def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m tools.parse_log", description=__doc__.split("\n")[0])
  parser.add_argument("logs", nargs="+", help="trainer logs")
  parser.add_argument("--json", action="store_true", help="print one JSON object per log")
  parser.add_argument("--plot", metavar="OUT.png", help="draw loss, accuracy and img/s against step")
  parser.add_argument("--get", metavar="KEY", help="print only this value of the (last) log, e.g. mean_ips "
                      "(for shell scripts)")
  parser.add_argument("--warmup_steps", type=int, default=50, help="loops ending at or before this are warm-up")
  args = parser.parse_args(argv)
  results = []
  for path in args.logs:
    try:
      results.append(summarize(path, args.warmup_steps))
    except (IOError, OSError) as e:
      sys.stderr.write("parse_log: error: cannot read %s: %s\n" % (path, e))
      return 2
  if args.get:
    if args.get not in results[-1]:
      sys.stderr.write("parse_log: error: no key %r; keys: %s\n" % (args.get, ", ".join(sorted(results[-1]))))
      return 2
    print(results[-1][args.get])
    return 0
  if args.json:
    for r in results:
      print(json.dumps(r, sort_keys=True))
  else:
    print_table(results)
  if args.plot:
    plot(args.logs, args.plot)
    if not args.json:
      print("plot: %s" % args.plot)
  return 0


if __name__ == "__main__":
  sys.exit(main())
