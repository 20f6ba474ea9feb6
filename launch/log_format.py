"""The trainer's log lines: one fixed format per kind, written here and parsed by tools/parse_log.py.

  train: epoch E step S/T loss L lr R img/s I step_ms M loss_scale C skipped K eta HH:MM:SS
  eval: epoch E step S top1 A top5 B examples N
  summary: final_top1 A best_top1 B final_top5 C final_loss L mean_img/s I wall_s W steps S

Fields are space-separated "name value" pairs after the kind. `loss` is the mean over the steps of the loop,
`img/s` counts images of this rank over the wall time of the loop (input waits included), `step_ms` is that time
per step, `skipped` counts loss-scale-skipped steps since the start, and the summary's mean_img/s leaves out the
warm-up loops (the first ~50 steps, where graph optimisation and the input pipeline's start dominate).
Each line may be preceded by absl's prefix (I1126 10:00:00.000000 123 train.py:45]).
"""
import re

TRAIN = ("train: epoch {epoch:.2f} step {step}/{total} loss {loss:.5f} lr {lr:.4e} img/s {ips:.1f} "
         "step_ms {step_ms:.2f} loss_scale {scale:g} skipped {skipped} eta {eta}")
EVAL = "eval: epoch {epoch:.2f} step {step} top1 {top1:.5f} top5 {top5:.5f} examples {examples}"
SUMMARY = ("summary: final_top1 {final_top1:.5f} best_top1 {best_top1:.5f} final_top5 {final_top5:.5f} "
           "final_loss {final_loss:.5f} mean_img/s {mean_ips:.1f} wall_s {wall:.1f} steps {steps}")

_NUM = r"([-+0-9.eEinfaN]+)"
TRAIN_RE = re.compile(
    r"train: epoch %s step (\d+)/(\d+) loss %s lr %s img/s %s step_ms %s loss_scale %s skipped (\d+) eta (\S+)" %
    ((_NUM,) * 6))
EVAL_RE = re.compile(r"eval: epoch %s step (\d+) top1 %s top5 %s examples (\d+)" % ((_NUM,) * 3))
SUMMARY_RE = re.compile(r"summary: final_top1 %s best_top1 %s final_top5 %s final_loss %s mean_img/s %s "
                        r"wall_s %s steps (\d+)" % ((_NUM,) * 6))


def format_eta(seconds):
  """Seconds -> H:MM:SS (hours may exceed 24)."""
  seconds = max(0, int(round(seconds)))
  return "%d:%02d:%02d" % (seconds // 3600, seconds // 60 % 60, seconds % 60)


def parse_line(line):
  """Returns (kind, dict of fields) for a trainer line, or None for any other line."""
  m = TRAIN_RE.search(line)
  if m:
    g = m.groups()
    return "train", {
        "epoch": float(g[0]),
        "step": int(g[1]),
        "total": int(g[2]),
        "loss": float(g[3]),
        "lr": float(g[4]),
        "ips": float(g[5]),
        "step_ms": float(g[6]),
        "loss_scale": float(g[7]),
        "skipped": int(g[8]),
        "eta": g[9]
    }
  m = EVAL_RE.search(line)
  if m:
    g = m.groups()
    return "eval", {
        "epoch": float(g[0]),
        "step": int(g[1]),
        "top1": float(g[2]),
        "top5": float(g[3]),
        "examples": int(g[4])
    }
  m = SUMMARY_RE.search(line)
  if m:
    g = m.groups()
    return "summary", {
        "final_top1": float(g[0]),
        "best_top1": float(g[1]),
        "final_top5": float(g[2]),
        "final_loss": float(g[3]),
        "mean_ips": float(g[4]),
        "wall": float(g[5]),
        "steps": int(g[6])
    }
  return None
