"""launch/train_full_1p.sh and train_performance_1p.sh on a tiny run: summary lines, logs and the case file."""
import os
import subprocess
import sys

import pytest

from launch import metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "--model=tiny", "--hidden_size=16", "--num_layers=1", "--num_heads=2", "--mlp_dim=32", "--image_size=8",
    "--patch_size=4", "--eval_batch_size=64", "--workers=0", "--lr_warmup_steps=2", "--iterations_per_loop=4",
    "--augment=none"
]


def _run(script, tmp_path, *args, **env_vars):
  # PYTHON: the scripts run this stack's interpreter (by default they use the project's .venv).
  env = dict(os.environ, ASCEND_DEVICE_ID="3", TF_CPP_MIN_LOG_LEVEL="3", TF_DISABLE_MKL="1", PYTHON=sys.executable)
  env.update(env_vars)
  return subprocess.run(
      [os.path.join(REPO, "launch", script),
       "--output_path=%s" % tmp_path, "--batch_size=32", "--train_steps=8"] + TINY + list(args), cwd=str(tmp_path),
      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=300)


def _fields(path):
  with open(path) as f:
    return dict(line.strip().split(" = ", 1) for line in f if " = " in line)


def test_full_script_prints_the_summary_lines_and_writes_the_case_log(tmp_path):
  result = _run("train_full_1p.sh", tmp_path, "--precision_mode=must_keep_origin_dtype")
  assert result.returncode == 0, result.stderr
  lines = dict(l.split(" : ", 1) for l in result.stdout.splitlines() if " : " in l)
  assert float(lines["Final Performance images/sec"]) > 0
  assert 0.0 <= float(lines["Final Train Accuracy"]) <= 1.0
  assert int(lines["E2E Training Duration sec"]) >= 0
  out = tmp_path / "3"
  assert "train: epoch" in (out / "train_3.log").read_text()
  case = _fields(str(out / "tiny_bs32_1p_acc.log"))
  assert case["Network"] == "tiny" and case["RankSize"] == "1" and case["BatchSize"] == "32"
  assert case["CaseName"] == "tiny_bs32_1p_acc"
  # The numbers are the trainer's own: its summary and last eval in the run's metrics.jsonl.
  records = metrics.read_jsonl(str(out / "ckpt" / metrics.METRICS_FILE))
  (summary,) = [r for r in records if r["event"] == "summary"]
  last_eval = [r for r in records if r["event"] == "eval"][-1]
  for fps in (lines["Final Performance images/sec"], case["ActualFPS"]):
    assert float(fps) == pytest.approx(summary["img_per_sec"], rel=1e-6)
  for accuracy in (lines["Final Train Accuracy"], case["TrainAccuracy"]):
    assert float(accuracy) == pytest.approx(last_eval["top1"], rel=1e-6)
  assert float(case["ActualLoss"]) == pytest.approx(summary["final_loss"], rel=1e-6)
  assert 0 < float(case["TrainingTime"]) and int(case["E2ETrainingTime"]) >= 0 and case["DeviceType"]


def test_performance_script_skips_eval_and_names_the_case_perf(tmp_path):
  result = _run("train_performance_1p.sh", tmp_path)
  assert result.returncode == 0, result.stderr
  assert "Final Performance images/sec" in result.stdout and "Final Train Accuracy" not in result.stdout
  case = _fields(str(tmp_path / "3" / "tiny_bs32_1p_perf.log"))
  assert case["CaseName"] == "tiny_bs32_1p_perf" and "TrainAccuracy" not in case
  assert "eval:" not in (tmp_path / "3" / "train_3.log").read_text()


def test_failed_training_fails_the_script(tmp_path):
  result = _run("train_full_1p.sh", tmp_path, "--model=ViT-Q/7")
  assert result.returncode == 2 and "unknown model" in result.stderr


@pytest.mark.parametrize("script, kind", [("train_full_8p.sh", "acc"), ("train_performance_8p.sh", "perf")])
def test_8p_scripts_run_one_process_per_rank_and_print_the_summary(tmp_path, script, kind):
  # On this CPU machine the 8p scripts run RANK_SIZE processes joined by TF collective ops; on an NPU, HCCL.
  result = _run(script, tmp_path, RANK_SIZE="2")
  assert result.returncode == 0, result.stdout + result.stderr
  lines = dict(l.split(" : ", 1) for l in result.stdout.splitlines() if " : " in l)
  case = _fields(str(tmp_path / "0" / ("tiny_bs32_2p_%s.log" % kind)))
  assert case["RankSize"] == "2" and case["BatchSize"] == "32" and case["CaseName"] == "tiny_bs32_2p_%s" % kind
  # One run: rank 0 wrote the checkpoints and metrics; FPS counts both ranks' images (global batch 64).
  records = metrics.read_jsonl(str(tmp_path / "ckpt_2p" / metrics.METRICS_FILE))
  (run,) = [r for r in records if r["event"] == "run"]
  assert run["num_ranks"] == 2 and run["global_batch_size"] == 64 and run["engine"] == "collective"
  (summary,) = [r for r in records if r["event"] == "summary"]
  assert float(lines["Final Performance images/sec"]) == pytest.approx(summary["img_per_sec"], rel=1e-6)
  for rank in (0, 1):
    assert "train: epoch" in (tmp_path / str(rank) / ("train_%d.log" % rank)).read_text()
  assert summary["steps"] == 8


def test_the_1p_script_accumulates_a_batch_larger_than_the_micro_batch(tmp_path):
  result = _run("train_performance_1p.sh", tmp_path, "--batch_size=64", "--micro_batch_size=16")
  assert result.returncode == 0, result.stderr
  records = metrics.read_jsonl(str(tmp_path / "3" / "ckpt" / metrics.METRICS_FILE))
  (run,) = [r for r in records if r["event"] == "run"]
  assert run["batch_size"] == 16 and run["accum_steps"] == 4 and run["global_batch_size"] == 64
  assert (tmp_path / "3" / "tiny_bs64_1p_perf.log").exists()
