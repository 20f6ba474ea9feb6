"""The numbers a run reports, defined once: the records of metrics.jsonl and the throughput over them.

The trainer writes one JSON object per line to <model_dir>/metrics.jsonl, appended across resumes:
  {"event": "run", ...}      a run (one process) starts: what it trains, its first step, the time
  {"event": "train", ...}    one or more loops: step, total, epoch, steps, seconds, images, loss, lr, img_per_sec,
                             step_ms, eta_s, wall_s (since the run started), and loss_scale / skipped when loss
                             scaling is on
  {"event": "eval", ...}     step, epoch, top1, top5, examples
  {"event": "summary", ...}  final_top1, best_top1, final_top5, final_loss, img_per_sec, wall_s, steps, and
                             input_wait, startup_s when measured
tools.parse_log reads this file; the text lines of train.log carry the same numbers for people and ModelZoo tools.

Throughput is images over seconds of a run's timed train records, never a mean of per-loop rates. The first record
of a run holds the first loop, which builds, optimises and compiles the graph and starts the input workers: it is
never timed. Records ending within `warmup_steps` of the run's first step are warm-up too (tensorpack's "never look
at the first 50 iterations"), unless that leaves nothing, in which case every record but the first counts; a run of
one record has only that one. Start-up is what the first record took beyond its steps at the median per-step
time of the later ones: graph build, optimisation, compile and the input's start, and robust to one slow loop.
"""
import json
import os
import statistics

METRICS_FILE = "metrics.jsonl"
DEFAULT_WARMUP_STEPS = 50


def timed_records(train_records, warmup_steps=DEFAULT_WARMUP_STEPS):
  """The train records of ONE run (in step order) that count for throughput (see the module docstring)."""
  if len(train_records) <= 1:
    return list(train_records)
  first_step = train_records[0]["step"] - train_records[0]["steps"]
  after_first = train_records[1:]
  timed = [r for r in after_first if r["step"] > first_step + warmup_steps]
  return timed or after_first


def images_per_sec(records):
  """Images over seconds of `records` (NaN when they took no time)."""
  seconds = sum(r["seconds"] for r in records)
  return sum(r["images"] for r in records) / seconds if seconds > 0 else float("nan")


def run_images_per_sec(train_records, warmup_steps=DEFAULT_WARMUP_STEPS):
  """The throughput of one run: images per second of its timed records."""
  return images_per_sec(timed_records(train_records, warmup_steps))


def startup_seconds(train_records):
  """Seconds of ONE run's first train record beyond its steps at the median per-step time of its later records
  (graph build, optimisation, compile, input start); None with fewer than two records."""
  later = [r["seconds"] / r["steps"] for r in train_records[1:] if r["steps"]]
  if not later:
    return None
  return train_records[0]["seconds"] - train_records[0]["steps"] * statistics.median(later)


def split_runs(records):
  """Splits a sequence of records (dicts with "event") into runs at each "run" event; records before the first
  "run" event form a run of their own. Returns a list of lists (each starting with its "run" record, if any)."""
  runs = []
  for record in records:
    if record.get("event") == "run" or not runs:
      runs.append([])
    runs[-1].append(record)
  return runs


def read_jsonl(path):
  """The records of a metrics.jsonl file; a last line cut short by a killed run is ignored."""
  records = []
  with open(path) as f:
    lines = f.read().split("\n")
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except ValueError:
      if number < len(lines) - 1:  # only the very last (unterminated) line may be cut short
        raise ValueError("%s line %d is not JSON" % (path, number))
  return records


def _plain(value):
  """A NumPy scalar (e.g. float32 from sess.run) as the Python number JSON can write."""
  if hasattr(value, "item"):
    return value.item()
  raise TypeError("%r is not JSON serializable" % (value,))


class JsonlWriter(object):
  """Appends records to a metrics.jsonl file, one flushed line each (a killed run loses at most one line)."""
  what = METRICS_FILE

  def __init__(self, path):
    directory = os.path.dirname(path)
    if directory and not os.path.isdir(directory):
      os.makedirs(directory)
    self.path = path
    self._file = open(path, "a")

  def write(self, record):
    self._file.write(json.dumps(record, sort_keys=True, allow_nan=True, default=_plain) + "\n")
    self._file.flush()

  def close(self):
    self._file.close()
