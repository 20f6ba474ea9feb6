"""Data-parallel training with real engines, one process per rank on this machine (tiny model, two ranks).

Each engine this stack has is tested: TF collective ops on both stacks, Horovod on the TF 1.15 stack where it is
installed (make test builds it there). Every process has a timeout, and every test checks that no rank is left.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from launch import spawn
from tests.train_helpers import TINY_ARGS, read_log, run_trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENGINES = spawn.installed_engines()
RUN_TIMEOUT = 240
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_DISABLE_MKL="1", PYTHONPATH=REPO)


def _spawn(model_dir, engine, *args, timeout=RUN_TIMEOUT, wait=True):
  command = [sys.executable, "-m", "launch.spawn", "--num_ranks=2",
             "--distribute=%s" % engine, "--grace=20", "--"] + TINY_ARGS + ["--model_dir=%s" % model_dir] + list(args)
  proc = subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, start_new_session=True)
  if not wait:
    return proc
  try:
    out, _ = proc.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)
    raise
  return proc.returncode, out


def _ranks_of(model_dir):
  """pids of live launch.train processes of this run (found through /proc), by rank."""
  found = {}
  for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
      with open("/proc/%s/cmdline" % pid, "rb") as f:
        cmdline = f.read().decode("utf-8", "replace").split("\0")
      if "launch.train" not in cmdline or "--model_dir=%s" % model_dir not in cmdline:
        continue
      with open("/proc/%s/environ" % pid, "rb") as f:
        env = dict(item.split("=", 1) for item in f.read().decode("utf-8", "replace").split("\0") if "=" in item)
      found[int(env.get("RANK_ID", env.get("HOROVOD_RANK", "-1")))] = int(pid)
    except (OSError, IOError):
      continue
  return found


def _rank_log(model_dir, rank):
  with open(os.path.join(model_dir, "rank_%d.log" % rank)) as f:
    return f.read()


def _evals(text):
  return [float(m) for m in re.findall(r"eval: .* top1 ([0-9.]+) ", text)]


def _weights(path):
  reader = tf.train.load_checkpoint(path)
  return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}


@pytest.mark.parametrize("engine", ENGINES)
def test_two_ranks_train_exactly_like_one_rank_with_twice_the_batch(engine, tmp_path):
  two, one = str(tmp_path / "two"), str(tmp_path / "one")
  # 30 steps of 5 per sess.run cross an epoch end (22 steps of global batch 64): eval and a checkpoint there too.
  args = ["--train_steps=30", "--iterations_per_loop=5", "--augment=none"]
  code, out = _spawn(two, engine, "--train_batch_size=32", *args)
  assert code == 0, out
  run_trainer(one, "--train_batch_size=64", *args)
  # Rank r's part of global batch k is every 2nd example of the single run's batch k: same examples, same weights.
  a, b = _weights(tf.train.latest_checkpoint(two)), _weights(tf.train.latest_checkpoint(one))
  assert sorted(a) == sorted(b) and int(a["global_step"]) == 30
  for name in a:
    np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=2e-5, err_msg=name)
  logs = [_rank_log(two, r) for r in (0, 1)]
  # Both ranks hold bitwise the same weights, and report the same exact top-1 over the whole test split, which is
  # also what one process finds for the same checkpoint.
  assert all("ranks in sync: max |w - w(rank 0)| = 0 over 2 ranks" in log for log in logs)
  assert _evals(logs[0]) == _evals(logs[1]) and len(_evals(logs[0])) == 2
  single = run_trainer(str(tmp_path / "eval"), "--mode=eval", "--init_checkpoint=%s" % tf.train.latest_checkpoint(two))
  assert single["final_top1"] == pytest.approx(_evals(logs[0])[-1], abs=1e-5)
  # Rank 0 alone writes the run folder; the log says the global batch; img/s counts both ranks' images.
  train, _, _ = read_log(two)
  assert [r["step"] for r in train][-1] == 30
  assert "global batch 64 = 32 per rank x 2 ranks (%s, rank 0)" % engine in open(os.path.join(two, "train.log")).read()
  assert "global batch 64 = 32 per rank x 2 ranks (%s, rank 1)" % engine in logs[1]
  assert sorted(f for f in os.listdir(two) if f.startswith("model.ckpt-30")) and not _ranks_of(two)


def _worker(engine, poison_rank, timeout=120):
  """Runs tests/distributed_worker.py on 2 ranks; returns each rank's JSON record."""
  command = [sys.executable, "-m", "tests.distributed_worker", engine, str(poison_rank)]
  if engine == "horovod":
    horovodrun = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    procs = [
        subprocess.Popen([horovodrun, "-np", "2", "-H", "localhost:2", "--gloo"] + command, cwd=REPO, env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    ]
  else:
    ports = spawn.free_ports(2)
    procs = [
        subprocess.Popen(command, cwd=REPO, env=dict(ENV, TF_CONFIG=spawn.tf_config(ports, r)), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, universal_newlines=True) for r in (0, 1)
    ]
  outputs = spawn.outputs_of(procs, timeout)
  records = [json.loads(m) for text in outputs for m in re.findall(r"(\{\"rank\".*\})", text)]
  assert len(records) == 2, "\n".join(outputs)
  return sorted(records, key=lambda r: r["rank"])


@pytest.mark.parametrize("engine", ENGINES)
def test_an_inf_on_one_rank_makes_every_rank_skip_that_step(engine):
  first, second = _worker(engine, poison_rank=1)
  # Rank 1's inf reaches rank 0 through the gradient all-reduce (before the finite check): both skip the 3rd step,
  # both halve the scale, and their weights stay bitwise equal.
  for record in (first, second):
    assert record["skipped"] == 1 and record["loss_scale"] == 512.0 and record["global_step"] == 5
  assert first["digest"] == second["digest"]


def test_a_killed_rank_stops_the_other_and_a_rerun_resumes(tmp_path):
  d = str(tmp_path / "run")
  args = ["--train_steps=1500", "--iterations_per_loop=5", "--save_every_loops=10", "--mode=train"]
  proc = _spawn(d, "collective", *args, wait=False)
  try:
    deadline = time.time() + 120
    while time.time() < deadline and not tf.train.latest_checkpoint(d):
      time.sleep(0.5)
    ranks = _ranks_of(d)
    assert tf.train.latest_checkpoint(d) and sorted(ranks) == [0, 1], proc.stdout.read() if proc.poll() else ""
    os.kill(ranks[1], signal.SIGKILL)
    killed = time.time()
    out, _ = proc.communicate(timeout=90)
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
  # Rank 0 notices within seconds (its watchdog: TF 1.15's collectives would wait forever), says which rank it
  # lost and where a rerun resumes; the launcher fails; no process is left.
  assert proc.returncode != 0 and time.time() - killed < 60
  assert "rank 1 was killed by SIGKILL" in out
  lost = [l for l in _rank_log(d, 0).splitlines() if "lost rank 1" in l]
  assert lost and "Rerun the same command to resume from %s" % d in lost[0]
  assert not _ranks_of(d)
  saved = int(tf.train.latest_checkpoint(d).rsplit("-", 1)[1])
  # The rerun stops 50 steps later instead of at 1500 (the resume is the same; the test is shorter).
  code, out = _spawn(d, "collective", *(args[1:] + ["--train_steps=%d" % (saved + 50)]))
  assert code == 0, out
  assert "resumed from %s" % os.path.join(d, "model.ckpt-%d" % saved) in out
  assert int(_weights(tf.train.latest_checkpoint(d))["global_step"]) == saved + 50


def test_ranks_that_disagree_stop_with_one_line_instead_of_hanging(tmp_path):
  ports = spawn.free_ports(2)
  procs = [
      subprocess.Popen(
          [sys.executable, "-m", "launch.train"] + TINY_ARGS +
          ["--model_dir=%s" %
           (tmp_path / "run"), "--train_steps=%d" % steps, "--mode=train"], cwd=REPO,
          env=dict(ENV, TF_CONFIG=spawn.tf_config(ports, r)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
          universal_newlines=True) for r, steps in ((0, 20), (1, 30))
  ]
  try:
    errors = [proc.communicate(timeout=120)[1] for proc in procs]
  finally:
    for proc in procs:
      proc.kill()
  for proc, err in zip(procs, errors):
    assert proc.returncode == 1
    assert "launch.train: error: the 2 ranks disagree on total steps" in err.strip().splitlines()[-1]
