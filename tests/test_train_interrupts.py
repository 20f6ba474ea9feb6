"""Ctrl-C / SIGTERM: the trainer stops at a loop boundary with a checkpoint of exactly that step, exits 130 / 143
without a traceback, leaves no worker behind, and the resumed run ends with the weights of an uninterrupted one."""
import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from launch import interrupts
from tests.train_helpers import TINY_ARGS
from tools import compare_checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = TINY_ARGS[:] + ["--train_steps=400", "--iterations_per_loop=2", "--save_every_loops=1000", "--mode=train"]


def _start(model_dir, workers):
  command = [sys.executable, "-m", "launch.train", "--model_dir=%s" % model_dir] + ARGS + ["--workers=%d" % workers]
  return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)


def _children(pid):
  out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], stdout=subprocess.PIPE, universal_newlines=True)
  return [int(p) for p in out.stdout.split()]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
  """The uninterrupted run both signals' resumed runs must match (one for the module: it is the same run)."""
  straight = str(tmp_path_factory.mktemp("straight") / "run")
  uninterrupted = _start(straight, workers=0)
  uninterrupted.communicate(timeout=600)
  assert uninterrupted.returncode == 0
  return straight


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_checkpoints_the_step_it_stopped_at_and_the_resumed_run_matches(tmp_path, straight_run, signum, code):
  stopped = str(tmp_path / "stopped")
  proc = _start(stopped, workers=1)
  lines, workers = [], []
  for line in proc.stdout:  # wait until training is under way (past the first loop)
    lines.append(line)
    if " train: " in line and "step 2/" not in line:
      workers = _children(proc.pid)
      proc.send_signal(signum)
      break
  rest = proc.stdout.read()
  proc.wait(timeout=120)
  text = "".join(lines) + rest
  assert proc.returncode == code, text[-3000:]
  assert "Traceback" not in text and "KeyboardInterrupt" not in text
  last = [l for l in text.splitlines() if "interrupted at step" in l][-1]
  step = int(last.split("interrupted at step ")[1].split()[0])
  assert 2 < step < 400 and ("model.ckpt-%d" % step) in last and "rerun the same command to resume" in last
  assert os.path.exists(os.path.join(stopped, "model.ckpt-%d.index" % step))
  time.sleep(0.5)
  assert workers and not [p for p in workers if os.path.exists("/proc/%d" % p)]  # no worker outlives the run
  resumed = _start(stopped, workers=2)  # a different worker count: batches do not depend on it
  resumed.communicate(timeout=600)
  assert resumed.returncode == 0
  a, b = compare_checkpoints.load(stopped), compare_checkpoints.load(straight_run)
  both, differences = compare_checkpoints.compare(a, b)
  assert len(both) > 10 and differences == []


def test_the_signal_handler_only_records_and_the_loop_announces_once(caplog):
  """The handler may run inside a logging call of the main thread: it must not log itself (a nested write to the
  same stream is a 'Logging error' traceback on Python 3.11); the loop announces the stop, once."""
  stop = interrupts.StopRequests(" (up to 50 steps)")
  with caplog.at_level(logging.WARNING):
    with stop:
      stop._handle(signal.SIGTERM, None)  # pylint: disable=protected-access
      assert not caplog.records and stop.signum == signal.SIGTERM
      assert stop.announce() and stop.announce()
  notices = [r.getMessage() for r in caplog.records]
  assert len(notices) == 1 and notices[0].startswith("SIGTERM: stopping after the current sess.run (up to 50 steps)")
