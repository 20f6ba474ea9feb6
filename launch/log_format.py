"""The trainer's text lines: one fixed format per kind, written from the metrics records (launch/metrics.py).

  run: <what trains, where it writes>
  train: epoch E step S/T loss L lr R img/s I step_ms M eta H:MM:SS [loss_scale C skipped K]
  eval: epoch E step S top1 A top5 B examples N [V_top1 A V_top5 B for each further view V: ema, hflip, ema_hflip]
  summary: final_top1 A best_top1 B final_top5 C final_loss L mean_img/s I wall_s W steps S [input_wait F]
           [startup_s U] [final_V_top1 A for each further view V of the last evaluation]

Fields are space-separated "name value" pairs after the kind. `loss` is the mean over the steps of the line's
loops, `img/s` counts images of this rank over the wall time of those loops (input waits included), `step_ms` is
that time per step; `loss_scale` and `skipped` (loss-scale-skipped steps since the start) appear only when loss
scaling is on. The summary's mean_img/s is launch.metrics' throughput; input_wait is the fraction of the time since
the first batch was asked for that the batch generator waited for the input workers (absent with --workers=0):
near 0, the step is the bottleneck; well above 0, the data is. startup_s is the first loop's time beyond its steps
at the later loops' median pace (graph build, optimisation, compile, input start; launch.metrics). The console
shows a line after an `HH:MM:SS` time; train.log keeps absl's full prefix (I1126 10:00:00.000000 123 train.py:45]).
tools.parse_log reads metrics.jsonl when it is there and these lines otherwise (ModelZoo logs, captured stderr).
"""
import re

TRAIN = ("train: epoch {epoch:.2f} step {step}/{total} loss {loss:.5f} lr {lr:.4e} img/s {img_per_sec:.1f} "
         "step_ms {step_ms:.2f} eta {eta}")
LOSS_SCALE = " loss_scale {loss_scale:g} skipped {skipped}"
EVAL = "eval: epoch {epoch:.2f} step {step} top1 {top1:.5f} top5 {top5:.5f} examples {examples}"
SUMMARY = ("summary: final_top1 {final_top1:.5f} best_top1 {best_top1:.5f} final_top5 {final_top5:.5f} "
           "final_loss {final_loss:.5f} mean_img/s {img_per_sec:.1f} wall_s {wall_s:.1f} steps {steps}")
RUN_PREFIX = "run: "
RESUMED = "resumed from {path} at step {step} (epoch {epoch:.2f})"

_NUM = r"([-+0-9.eEinfaN]+)"
TRAIN_RE = re.compile(r"train: epoch %s step (\d+)/(\d+) loss %s lr %s img/s %s step_ms %s eta (\S+)"
                      r"(?: loss_scale %s skipped (\d+))?" % ((_NUM,) * 6))
EVAL_RE = re.compile(r"eval: epoch %s step (\d+) top1 %s top5 %s examples (\d+)" % ((_NUM,) * 3))
VIEW_RE = re.compile(r" ([a-z]+(?:_[a-z]+)*_top[15]) %s" % _NUM)  # the further views' fields after the examples
FINAL_VIEW_RE = re.compile(r" (final_[a-z]+(?:_[a-z]+)*_top1) %s" % _NUM)  # and the summary's
SUMMARY_RE = re.compile(r"summary: final_top1 %s best_top1 %s final_top5 %s final_loss %s mean_img/s %s "
                        r"wall_s %s steps (\d+)(?: input_wait %s)?(?: startup_s %s)?" % ((_NUM,) * 8))
RESUMED_RE = re.compile(r"resumed from \S+ at step (\d+)")
RUN_RE = re.compile(r"(?:^|\] |^\d\d:\d\d:\d\d )run: ")


def format_eta(seconds):
  """Seconds -> H:MM:SS (hours may exceed 24)."""
  seconds = max(0, int(round(seconds)))
  return "%d:%02d:%02d" % (seconds // 3600, seconds // 60 % 60, seconds % 60)


def train_line(record):
  """The text line of a "train" metrics record."""
  line = TRAIN.format(eta=format_eta(record["eta_s"]), **record)
  if "loss_scale" in record:
    line += LOSS_SCALE.format(**record)
  return line


def eval_line(record):
  """The eval line; the accuracy of each further view (the weights' EMA, flip averaging) follows in the record's
  order, as <view>_top1 A <view>_top5 B."""
  line = EVAL.format(**record)
  for name in record:
    if name.endswith("_top1") and name[:-1] + "5" in record:
      line += " {0} {1:.5f} {2} {3:.5f}".format(name, record[name], name[:-1] + "5", record[name[:-1] + "5"])
  return line


def summary_line(record):
  line = SUMMARY.format(**record)
  if "input_wait" in record:
    line += " input_wait {input_wait:.3f}".format(**record)
  if "startup_s" in record:
    line += " startup_s {startup_s:.1f}".format(**record)
  for name in record:
    if name.startswith("final_") and name.endswith("_top1") and name != "final_top1":
      line += " {0} {1:.5f}".format(name, record[name])
  return line


_SUMMARY_FIELDS = (
    ("final_top1", float),
    ("best_top1", float),
    ("final_top5", float),
    ("final_loss", float),
    ("img_per_sec", float),
    ("wall_s", float),
    ("steps", int),
    ("input_wait", float),
    ("startup_s", float),
)
# The fields each kind of line carries, in the order of its regex groups (absent optional groups are left out).
_FIELDS = (
    ("train", TRAIN_RE, (("epoch", float), ("step", int), ("total", int), ("loss", float), ("lr", float),
                         ("img_per_sec", float), ("step_ms", float), ("eta", str), ("loss_scale", float), ("skipped",
                                                                                                           int))),
    ("eval", EVAL_RE, (("epoch", float), ("step", int), ("top1", float), ("top5", float), ("examples", int))),
    ("summary", SUMMARY_RE, _SUMMARY_FIELDS),
    ("resumed", RESUMED_RE, (("step", int),)),
)


def parse_line(line):
  """Returns (kind, dict of fields) for a trainer line ("run", "resumed", "train", "eval", "summary"), or None.

  A train record gets the fields of a metrics record that the line carries; `steps`, `seconds` and `images` need
  the previous line of the same run and are filled in by tools.parse_log.
  """
  for kind, regex, fields in _FIELDS:
    m = regex.search(line)
    if m:
      values = {name: convert(value) for (name, convert), value in zip(fields, m.groups()) if value is not None}
      if kind in ("eval", "summary"):
        views = VIEW_RE if kind == "eval" else FINAL_VIEW_RE
        values.update((name, float(value)) for name, value in views.findall(line[m.end():]))
      return kind, values
  m = RUN_RE.search(line)
  if m:
    return "run", {"text": line[m.end():].rstrip("\n")}
  return None
