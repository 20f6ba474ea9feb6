"""tools/parse_log on hand-made text logs (for exact numbers) and on runs the trainer writes."""
import json
import os
import subprocess
import sys

import pytest

from launch import log_format
from launch import metrics
from tests.train_helpers import run_trainer
from tools import parse_log

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(path, lines):
  with open(path, "w") as f:
    f.write("\n".join("I1126 10:00:00.000000 1 train.py:1] " + l for l in lines) + "\n")


def _train(step, loss, ips, step_ms, scale=None):
  record = {
      "epoch": step / 10.0,
      "step": step,
      "total": 200,
      "loss": loss,
      "lr": 0.1,
      "img_per_sec": ips,
      "step_ms": step_ms,
      "eta_s": 1
  }
  if scale is not None:
    record.update(loss_scale=scale, skipped=3)
  return log_format.train_line(record)


def test_numbers_of_a_hand_made_log(tmp_path):
  path = str(tmp_path / "a.log")
  _write(
      path,
      [
          "run: a ViT",
          _train(25, 2.0, 10.0, 100.0),  # the first loop: never timed
          _train(50, 1.5, 20.0, 50.0),  # warm-up: ends within 50 steps of the start
          log_format.EVAL.format(epoch=5, step=50, top1=0.5, top5=0.9, examples=100),
          _train(100, 1.0, 100.0, 10.0),
          _train(150, 0.8, 50.0, 20.0),
          _train(200, 0.5, 100.0, 10.0, scale=1024),
          log_format.EVAL.format(epoch=20, step=200, top1=0.7, top5=0.95, examples=100),
          "some other line",
      ])
  (r,) = parse_log.summarize(path)
  assert r["final_top1"] == 0.7 and r["best_top1"] == 0.7 and r["final_top5"] == 0.95
  # Three timed loops of 50 steps lasting 0.5, 1.0 and 0.5 s at 100, 50 and 100 img/s: 150 images in 2 s.
  assert r["mean_ips"] == pytest.approx(75.0)
  assert r["median_ips"] == 100.0 and r["median_step_ms"] == 10.0
  assert r["final_loss"] == 0.5 and r["steps"] == 200 and r["skipped_steps"] == 3


def test_the_moving_average_accuracy_is_read_from_the_eval_lines(tmp_path):
  path = str(tmp_path / "ema.log")
  evals = [
      dict(epoch=1, step=10, top1=0.5, top5=0.9, examples=100, ema_top1=0.6, ema_top5=0.91),
      dict(epoch=2, step=20, top1=0.7, top5=0.95, examples=100, ema_top1=0.65, ema_top5=0.96)
  ]
  _write(path, ["run: a ViT", _train(10, 2.0, 10.0, 100.0)] + [log_format.eval_line(e) for e in evals])
  (r,) = parse_log.summarize(path)
  assert (r["final_top1"], r["final_ema_top1"], r["best_ema_top1"]) == (0.7, 0.65, 0.65)
  plain = str(tmp_path / "plain.log")
  _write(plain, ["run: a ViT", log_format.EVAL.format(epoch=1, step=10, top1=0.5, top5=0.9, examples=100)])
  (r,) = parse_log.summarize(plain)
  assert r["final_top1"] == 0.5 and r["final_ema_top1"] != r["final_ema_top1"]  # NaN: no moving average


def test_a_resumed_text_log_is_two_runs_and_the_last_is_reported(tmp_path):
  path = str(tmp_path / "r.log")
  _write(path, [
      "run: first",
      _train(100, 1.0, 10.0, 10.0),
      _train(200, 0.9, 10.0, 10.0),
      log_format.RESUMED.format(path="x/model.ckpt-150", step=150, epoch=1.5), "run: second",
      _train(200, 0.7, 40.0, 10.0),
      _train(300, 0.6, 80.0, 10.0)
  ])
  first, second = parse_log.summarize(path, warmup_steps=0, all_runs=True)
  assert (first["run"], first["runs"], first["steps"], first["final_loss"]) == (1, 2, 200, 0.9)
  assert (second["run"], second["steps"], second["final_loss"]) == (2, 300, 0.6)
  assert second["mean_ips"] == pytest.approx(80.0)  # its first loop (150 -> 200, at 40 img/s) is not timed
  (last,) = parse_log.summarize(path, warmup_steps=0)
  assert (last["run"], last["steps"], last["mean_ips"]) == (2, 300, second["mean_ips"])


def test_the_throughput_definition_on_records():
  records = [{
      "step": 10,
      "steps": 10,
      "seconds": 9.0,
      "images": 80
  }] + [{
      "step": s,
      "steps": 10,
      "seconds": 1.0,
      "images": 80
  } for s in range(20, 110, 10)]
  # The first record and those ending within 50 steps of the start (0) are out: steps 60..100, 5 records.
  assert metrics.run_images_per_sec(records, 50) == pytest.approx(80.0)
  assert [r["step"] for r in metrics.timed_records(records, 50)] == [60, 70, 80, 90, 100]
  # A run shorter than the warm-up counts every record but the first; a one-record run counts that one.
  assert [r["step"] for r in metrics.timed_records(records[:3], 50)] == [20, 30]
  assert metrics.run_images_per_sec(records[:1], 50) == pytest.approx(80 / 9.0)


def test_startup_is_the_first_record_beyond_its_steps_at_the_median_pace():
  first = {"steps": 10, "seconds": 9.0}
  paced = [{"steps": 10, "seconds": 1.0}, {"steps": 5, "seconds": 0.5}, {"steps": 10, "seconds": 1.0}]
  # 9 s for 10 steps at 0.1 s a step: 8 s of start-up, whatever one slow loop among the later ones took.
  assert metrics.startup_seconds([first] + paced) == pytest.approx(8.0)
  assert metrics.startup_seconds([first] + paced + [{"steps": 10, "seconds": 30.0}]) == pytest.approx(8.0)
  # An even count takes the middle two: 0.1 and 0.3 s a step.
  assert metrics.startup_seconds([first, paced[0], {"steps": 10, "seconds": 3.0}]) == pytest.approx(7.0)
  assert metrics.startup_seconds([first]) is None


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  dirs = []
  for seed in (1, 2):
    d = str(tmp_path_factory.mktemp("run%d" % seed))
    with tf.Graph().as_default():
      run_trainer(d, "--train_steps=8", "--iterations_per_loop=4", "--seed=%d" % seed)
    dirs.append(d)
  return dirs


def test_cli_json_and_plot_on_trainer_runs(two_runs, tmp_path):
  out_png = str(tmp_path / "runs.png")
  logs = [os.path.join(d, "train.log") for d in two_runs]
  result = subprocess.run([sys.executable, "-m", "tools.parse_log", "--json", "--plot", out_png] + logs, cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
  assert result.returncode == 0, result.stderr
  records = [json.loads(l) for l in result.stdout.splitlines()]
  assert [r["log"] for r in records] == logs
  for r, d in zip(records, two_runs):
    assert r["source"] == os.path.join(d, metrics.METRICS_FILE)  # metrics.jsonl beside train.log is preferred
    assert r["steps"] == 8 and 0 <= r["final_top1"] <= 1 and r["mean_ips"] > 0 and r["final_loss"] > 0
  with open(out_png, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  text = subprocess.run([sys.executable, "-m", "tools.parse_log"] + two_runs, cwd=REPO, stdout=subprocess.PIPE,
                        universal_newlines=True).stdout
  assert text.count("accuracy  final") == 2
  get = subprocess.run([sys.executable, "-m", "tools.parse_log", "--get", "final_top1", two_runs[0]], cwd=REPO,
                       stdout=subprocess.PIPE, universal_newlines=True).stdout
  assert float(get) == pytest.approx(records[0]["final_top1"])


def test_the_text_lines_and_metrics_jsonl_tell_the_same_run(two_runs):
  d = two_runs[0]
  (from_json,) = parse_log.summarize(d)
  alone = os.path.join(d, "copy_of_train.log")  # not named train.log: read as text
  with open(os.path.join(d, "train.log")) as src, open(alone, "w") as dst:
    dst.write(src.read())
  (from_text,) = parse_log.summarize(alone)
  assert from_text["source"] == alone
  for key in ("steps", "final_top1", "final_top5", "final_loss", "best_top1"):
    assert from_text[key] == pytest.approx(from_json[key], abs=1e-5), key
  assert from_text["mean_ips"] == pytest.approx(from_json["mean_ips"], rel=2e-3)
  assert from_json["trainer_mean_ips"] == pytest.approx(from_json["mean_ips"], rel=1e-9)
