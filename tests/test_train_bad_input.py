"""The trainer facing bad input as a real process: one writer per run folder, skipped files in train.log, a dead
input worker and an unreadable dataset as one line each."""
import os
import signal
import subprocess
import sys
import time

from tests import input_helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--hidden_size=16", "--num_layers=1", "--num_heads=2", "--mlp_dim=32", "--image_size=8"]


def _start(model_dir, *args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.Popen(
      [sys.executable, "-m", "launch.train", "--model_dir=%s" % model_dir] + TINY + list(args), cwd=REPO, env=env,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)


def _run(model_dir, *args):
  child = _start(model_dir, *args)
  out, err = child.communicate(timeout=300)
  return child.returncode, err


def _wait_for(condition, seconds=120):
  deadline = time.time() + seconds
  while time.time() < deadline:
    if condition():
      return True
    time.sleep(0.1)
  return False


def _children(pid):
  found = []
  for task in os.listdir("/proc/%d/task" % pid):
    with open("/proc/%d/task/%s/children" % (pid, task)) as f:
      found.extend(int(p) for p in f.read().split())
  return found


def _train_log(model_dir):
  path = os.path.join(model_dir, "train.log")
  return open(path).read() if os.path.isfile(path) else ""


def test_a_second_trainer_on_a_busy_folder_exits_2_and_the_first_goes_on(tmp_path):
  d = str(tmp_path / "run")
  first = _start(d, "--train_steps=100000", "--iterations_per_loop=10", "--mode=train", "--workers=0")
  try:
    assert _wait_for(lambda: "train: epoch" in _train_log(d)), first.stderr.read() if first.poll() else "no line"
    code, err = _run(d, "--train_steps=100000", "--mode=train", "--workers=0")
    lines = [l for l in err.splitlines() if "launch.train: error:" in l]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert "is in use by another run" in lines[0] and str(first.pid) in lines[0]
    # The refused run touched nothing of the first: it keeps training and still stops, checkpoints and exits as
    # its own run (SIGTERM: exit 143 with the checkpoint of the step it reached).
    lock = os.path.join(d, ".run.lock")
    assert open(lock).read().startswith("pid %d " % first.pid)
    steps = len(_train_log(d).splitlines())
    assert _wait_for(lambda: len(_train_log(d).splitlines()) > steps) and first.poll() is None
    first.send_signal(signal.SIGTERM)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 143, err[-2000:]
    assert "interrupted at step" in err and open(lock).read() == ""
  finally:
    if first.poll() is None:
      first.kill()


def test_a_rerun_after_kill_9_resumes_from_the_last_checkpoint(tmp_path):
  d = str(tmp_path / "run")
  victim = _start(d, "--train_steps=100000", "--iterations_per_loop=10", "--save_every_loops=5", "--mode=train",
                  "--workers=0")
  try:
    assert _wait_for(lambda: os.path.isfile(os.path.join(d, "checkpoint")))
  finally:
    victim.kill()  # SIGKILL: no cleanup, the lock file stays behind
    victim.communicate(timeout=60)
  code, err = _run(d, "--train_steps=100", "--iterations_per_loop=10", "--mode=train", "--workers=0")
  assert code == 0, err[-2000:]
  assert "resumed from %s/model.ckpt-" % d in _train_log(d)


def test_train_log_holds_every_skip_line(tmp_path):
  data = tmp_path / "data"
  for c in range(2):
    for i in range(10):
      input_helpers.write_image(str(data / "train" / ("c%d" % c) / ("%d.png" % i)), input_helpers.noisy(10 * c + i))
      input_helpers.write_image(str(data / "val" / ("c%d" % c) / ("%d.png" % i)), input_helpers.noisy(50 + i))
  bad = input_helpers.write_bad_files(str(data / "train" / "c0"))
  d = str(tmp_path / "run")
  code, err = _run(d, "--data_dir=%s" % data, "--train_batch_size=4", "--num_epochs=2", "--workers=1")
  assert code == 0, err[-2000:]
  log = _train_log(d)
  for path in bad.values():
    assert "input: skipped %s: " % path in log, path
  assert "bad files skipped so far" in log


def test_a_dead_input_worker_is_one_line_naming_it(tmp_path):
  d = str(tmp_path / "run")
  child = _start(d, "--train_steps=1000000", "--iterations_per_loop=10", "--mode=train", "--workers=1")
  try:
    assert _wait_for(lambda: "train: epoch" in _train_log(d))
    workers = [p for p in _children(child.pid) if p != child.pid]
    assert workers
    os.kill(workers[0], signal.SIGKILL)
    out, err = child.communicate(timeout=120)
  finally:
    if child.poll() is None:
      child.kill()
  lines = [l for l in err.splitlines() if "launch.train: error:" in l]
  assert child.returncode == 1 and len(lines) == 1 and "Traceback" not in err, err[-3000:]
  assert "input worker 0 (pid %d)" % workers[0] in lines[0] and "SIGKILL" in lines[0]


def test_a_dataset_of_unreadable_files_is_one_line_and_exit_2(tmp_path):
  data = tmp_path / "data"
  pointer = b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"0" * 64 + b"\nsize 12345\n"
  for c in range(2):
    for i in range(6):
      input_helpers.write_bytes(str(data / "train" / ("c%d" % c) / ("%d.jpg" % i)), pointer)
  code, err = _run(str(tmp_path / "run"), "--data_dir=%s" % data, "--train_batch_size=4", "--mode=train")
  lines = [l for l in err.splitlines() if "launch.train: error:" in l]
  assert code == 2 and len(lines) == 1 and "Traceback" not in err, err[-3000:]
  assert "Git LFS" in lines[0]
