"""python -m tools.parse_log [--flags] RUN... : accuracy, throughput, loss and step time of launch.train runs.

Each RUN is a run folder (--model_dir), its metrics.jsonl, or a text log (model_dir/train.log, the launch scripts'
train_<id>.log, captured stderr). The trainer's metrics.jsonl is read when it is there (a train.log with a
metrics.jsonl beside it counts as its folder); other logs are parsed from the documented text lines
(launch/log_format.py). A folder holds every run that resumed in it; the LAST run is reported unless --all_runs.

Per run: final and best top-1, final top-5, img/s (mean: images over seconds of the timed loops, the definition of
launch/metrics.py that the trainer's summary uses; median over those loops), final loss, median step time, steps,
skipped steps, wall time; final and best top-1 of each further view the run evaluated (the weights' EMA, flip
averaging: --ema_decay, --eval_hflip).
--json prints one JSON object per run, --get KEY one value of the last run, --plot OUT.png the curves; --help
explains every flag.
"""
import json
import math
import os
import sys

from absl import flags

from launch import log_format
from launch import metrics
from tools import command
from tools.command import UsageError

FLAGS = flags.FLAGS
# The further views an evaluation may report (launch/evaluation.py): key prefix, table label, what it is.
VIEWS_SHOWN = (
    ("ema", "EMA", "the weights' moving average"),
    ("hflip", "flip TTA", "softmax averaged with the mirror image"),
    ("ema_hflip", "EMA+flip", "both"),
)
VIEWS = [view for view, _, _ in VIEWS_SHOWN]


def resolve(path):
  """(path to read, "jsonl" | "text") for a run folder, a metrics.jsonl or a text log."""
  if os.path.isdir(path):
    jsonl = os.path.join(path, metrics.METRICS_FILE)
    if os.path.isfile(jsonl):
      return jsonl, "jsonl"
    return os.path.join(path, "train.log"), "text"
  if path.endswith(".jsonl"):
    return path, "jsonl"
  beside = os.path.join(os.path.dirname(path), metrics.METRICS_FILE)
  if os.path.basename(path) == "train.log" and os.path.isfile(beside):
    return beside, "jsonl"
  return path, "text"


def read_text_records(path):
  """Metrics records from a text log: "run" records where a run starts (its `run:` line, or a train line whose step
  is not after the previous one), train records with steps/seconds/images derived from the previous line of the
  same run (or its "resumed from ... at step N" line), and eval / summary records."""
  records, previous, run_start, resumed_at = [], None, 0, 0
  with open(path, errors="replace") as f:
    for line in f:
      parsed = log_format.parse_line(line)
      if parsed is None:
        continue
      kind, record = parsed
      record["event"] = kind
      if kind == "resumed":  # logged just before its run's `run:` line
        resumed_at = record["step"]
        continue
      if kind == "run":
        previous, run_start, resumed_at = None, resumed_at, 0
      elif kind == "train":
        if previous is not None and record["step"] <= previous:
          records.append({"event": "run", "text": "(a new run without a run line)"})
          previous, run_start = None, 0
        record["steps"] = record["step"] - (previous if previous is not None else run_start)
        record["seconds"] = record["steps"] * record["step_ms"] / 1000.0
        record["images"] = record["img_per_sec"] * record["seconds"]
        previous = record["step"]
      records.append(record)
  return records


def read_runs(path):
  """(source kind, list of runs): each run a list of records, the "run" record first when the log has one."""
  source, kind = resolve(path)
  records = metrics.read_jsonl(source) if kind == "jsonl" else read_text_records(source)
  return source, kind, metrics.split_runs(records)


def _median(values):
  values = sorted(values)
  if not values:
    return float("nan")
  mid = len(values) // 2
  return values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])


def summarize_run(records, warmup_steps=None):
  """The numbers of one run (NaN where it has no such record)."""
  nan = float("nan")
  start = records[0] if records and records[0].get("event") == "run" else {}
  if warmup_steps is None:
    warmup_steps = start.get("timing_warmup_steps", metrics.DEFAULT_WARMUP_STEPS)
  train = [r for r in records if r.get("event") == "train"]
  evals = [r for r in records if r.get("event") == "eval"]
  summaries = [r for r in records if r.get("event") == "summary"]
  timed = metrics.timed_records(train, warmup_steps)
  top1 = [e["top1"] for e in evals if not math.isnan(e["top1"])]
  views = {}
  for view in VIEWS:
    values = [e[view + "_top1"] for e in evals if not math.isnan(e.get(view + "_top1", nan))]
    views["final_%s_top1" % view] = evals[-1].get(view + "_top1", nan) if evals else nan
    views["best_%s_top1" % view] = max(values) if values else nan
  return dict(
      views, **{
          "steps": train[-1]["step"] if train else (summaries[-1]["steps"] if summaries else 0),
          "final_top1": evals[-1]["top1"] if evals else nan,
          "best_top1": max(top1) if top1 else nan,
          "final_top5": evals[-1]["top5"] if evals else nan,
          "mean_ips": metrics.images_per_sec(timed) if timed else nan,
          "median_ips": _median([r["img_per_sec"] for r in timed]),
          "final_loss": train[-1]["loss"] if train else nan,
          "median_step_ms": _median([r["step_ms"] for r in timed]),
          "skipped_steps": train[-1].get("skipped", 0) if train else 0,
          "wall_s": summaries[-1]["wall_s"] if summaries else nan,
          "trainer_mean_ips": summaries[-1]["img_per_sec"] if summaries else nan,
          "mode": start.get("mode", "train" if train else ("eval" if evals else "?")),
      })


def summarize(path, warmup_steps=None, all_runs=False):
  """A list of result dicts for `path`: its last run, or every run with all_runs."""
  source, kind, runs = read_runs(path)
  if not runs:
    runs = [[]]
  chosen = list(enumerate(runs, 1)) if all_runs else [(len(runs), runs[-1])]
  results = []
  for index, records in chosen:
    result = {"log": path, "source": source, "run": index, "runs": len(runs)}
    result.update(summarize_run(records, warmup_steps))
    results.append(result)
  return results


def _fmt(value, digits):
  return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else "%.*f" % (digits, value)


def print_table(results, out=sys.stdout):
  for r in results:
    out.write("%s  (run %d of %d, %s, from %s)\n" %
              (r["log"], r["run"], r["runs"], r["mode"], os.path.basename(r["source"])))
    out.write("  accuracy  final %s  best %s  (top-5 %s)\n" %
              (_fmt(r["final_top1"], 4), _fmt(r["best_top1"], 4), _fmt(r["final_top5"], 4)))
    for view, label, what in VIEWS_SHOWN:
      if not math.isnan(r["final_%s_top1" % view]):
        out.write("  %-9s final %s  best %s  (%s)\n" %
                  (label, _fmt(r["final_%s_top1" % view], 4), _fmt(r["best_%s_top1" % view], 4), what))
    out.write("  img/s     mean %s  median %s  (first loop and warm-up excluded)\n" %
              (_fmt(r["mean_ips"], 1), _fmt(r["median_ips"], 1)))
    out.write(
        "  loss      final %s   step time %s ms (median)   steps %d   skipped %d   wall %s s\n" %
        (_fmt(r["final_loss"], 4), _fmt(r["median_step_ms"], 2), r["steps"], r["skipped_steps"], _fmt(r["wall_s"], 1)))


def plot(paths, out_path):
  """Draws loss, top-1 and img/s against step for each run folder / log side by side into out_path (PNG)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  for path in paths:
    _, _, runs = read_runs(path)
    records = [r for run in runs for r in run]
    # A resumed folder repeats steps: keep the last record per step so each curve has one point per step.
    train = sorted({r["step"]: r for r in records if r.get("event") == "train"}.values(), key=lambda r: r["step"])
    evals = sorted({r["step"]: r for r in records if r.get("event") == "eval"}.values(), key=lambda r: r["step"])
    axes[0].plot([r["step"] for r in train], [r["loss"] for r in train], label=path)
    line, = axes[1].plot([e["step"] for e in evals], [e["top1"] for e in evals], marker=".", label=path)
    for (view, label, _), style in zip(VIEWS_SHOWN, ("--", ":", "-.")):
      shown = [e for e in evals if view + "_top1" in e]
      if shown:
        axes[1].plot([e["step"] for e in shown], [e[view + "_top1"] for e in shown], linestyle=style,
                     color=line.get_color(), label="%s (%s)" % (path, label))
        axes[1].legend(fontsize="small")
    axes[2].plot([r["step"] for r in train[1:]], [r["img_per_sec"] for r in train[1:]], label=path)
  for ax, title in zip(axes, ("training loss", "test top-1", "img/s (first loop left out)")):
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize="small")
  fig.tight_layout()
  fig.savefig(out_path, dpi=80)
  plt.close(fig)
  return out_path


def define_flags():
  """The command's flags; defined only when it runs as a command, so that importing this module (the tests, the
  benchmarks) leaves the process's absl flags alone."""
  flags.DEFINE_bool("json", False, "Print one JSON object per run (every key of the table) instead of the table.")
  flags.DEFINE_string("plot", None, "Draw loss, top-1 and img/s against step, one line per RUN, into this PNG.")
  flags.DEFINE_string(
      "get", None, "Print only this value of the last run, e.g. mean_ips, final_top1 (for shell "
      "scripts; the launch scripts use it).")
  flags.DEFINE_bool("all_runs", False, "Report every run that resumed in a folder, not only the last.")
  flags.DEFINE_integer(
      "warmup_steps", None, "Loops ending within this many steps of a run's start are warm-up, not timed "
      "(default: what the run recorded, else %d); a run's first loop never counts." % metrics.DEFAULT_WARMUP_STEPS)


def run(argv):
  logs = argv[1:]
  if not logs:
    raise UsageError("give at least one RUN: a run folder, a metrics.jsonl or a text log")
  results = []
  for path in logs:
    try:
      results.extend(summarize(path, FLAGS.warmup_steps, FLAGS.all_runs))
    except (IOError, OSError, ValueError) as e:
      raise UsageError("cannot read %s: %s" % (path, e))
  if FLAGS.get:
    if FLAGS.get not in results[-1]:
      raise UsageError("--get: no key %r; keys: %s" % (FLAGS.get, ", ".join(sorted(results[-1]))))
    print(results[-1][FLAGS.get])
    return
  if FLAGS.json:
    for r in results:
      print(json.dumps(r, sort_keys=True))
  else:
    print_table(results)
  if FLAGS.plot:
    plot(logs, FLAGS.plot)
    if not FLAGS.json:
      print("plot: %s" % FLAGS.plot)


if __name__ == "__main__":
  define_flags()
  command.run_command(run)
