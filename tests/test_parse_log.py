"""tools/parse_log on logs the trainer writes (and on hand-made lines for the exact numbers)."""
import json
import os
import subprocess
import sys

import pytest

from launch import log_format
from tools import parse_log
from tests.train_helpers import run_trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(path, lines):
  with open(path, "w") as f:
    f.write("\n".join("I1126 10:00:00.000000 1 train.py:1] " + l for l in lines) + "\n")


def _train(step, loss, ips, step_ms):
  return log_format.TRAIN.format(epoch=step / 10.0, step=step, total=200, loss=loss, lr=0.1, ips=ips, step_ms=step_ms,
                                 scale=1.0, skipped=0, eta="0:00:01")


def test_numbers_of_a_hand_made_log(tmp_path):
  path = str(tmp_path / "a.log")
  _write(
      path,
      [
          _train(25, 2.0, 10.0, 100.0),
          _train(50, 1.5, 20.0, 50.0),  # warm-up: steps <= 50
          log_format.EVAL.format(epoch=5, step=50, top1=0.5, top5=0.9, examples=100),
          _train(100, 1.0, 100.0, 10.0),
          _train(150, 0.8, 50.0, 20.0),
          _train(200, 0.5, 100.0, 10.0),
          log_format.EVAL.format(epoch=20, step=200, top1=0.7, top5=0.95, examples=100),
          "some other line"
      ])
  r = parse_log.summarize(path)
  assert r["final_top1"] == 0.7 and r["best_top1"] == 0.7 and r["final_top5"] == 0.95
  # Three timed loops of 50 steps lasting 0.5, 1.0 and 0.5 s at 100, 50 and 100 img/s: 150 images in 2 s.
  assert r["mean_ips"] == pytest.approx(75.0)
  assert r["median_ips"] == 100.0 and r["median_step_ms"] == 10.0
  assert r["final_loss"] == 0.5 and r["steps"] == 200


def test_resumed_log_keeps_one_record_per_step(tmp_path):
  path = str(tmp_path / "r.log")
  _write(path, [_train(100, 1.0, 10.0, 10.0), _train(200, 0.9, 10.0, 10.0), _train(200, 0.7, 10.0, 10.0)])
  train, _, _ = parse_log.read_records(path)
  assert [r["step"] for r in train] == [100, 200] and train[-1]["loss"] == 0.7


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  dirs = []
  for seed in (1, 2):
    d = str(tmp_path_factory.mktemp("run%d" % seed))
    with tf.Graph().as_default():
      run_trainer(d, "--train_steps=8", "--iterations_per_loop=4", "--seed=%d" % seed)
    dirs.append(d)
  return [os.path.join(d, "train.log") for d in dirs]


def test_cli_json_and_plot_on_trainer_logs(two_runs, tmp_path):
  out_png = str(tmp_path / "runs.png")
  result = subprocess.run([sys.executable, "-m", "tools.parse_log", "--json", "--plot", out_png] + two_runs, cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
  assert result.returncode == 0, result.stderr
  records = [json.loads(l) for l in result.stdout.splitlines()]
  assert [r["log"] for r in records] == two_runs
  for r in records:
    assert r["steps"] == 8 and 0 <= r["final_top1"] <= 1 and r["mean_ips"] > 0 and r["final_loss"] > 0
  with open(out_png, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  text = subprocess.run([sys.executable, "-m", "tools.parse_log"] + two_runs, cwd=REPO, stdout=subprocess.PIPE,
                        universal_newlines=True).stdout
  assert text.count("accuracy  final") == 2


def test_summary_line_matches_parse_log(two_runs):
  _, evals, summaries = parse_log.read_records(two_runs[0])
  assert summaries[-1]["final_top1"] == pytest.approx(parse_log.summarize(two_runs[0])["final_top1"])
  assert summaries[-1]["steps"] == 8 and evals[-1]["examples"] == 359
