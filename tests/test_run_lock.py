"""One writer per run folder: a second process is refused in one line naming the holder, a lock left by a process
killed with SIGKILL blocks nobody, processes racing to create the folder get one winner and no traceback."""
import os
import signal
import subprocess
import sys

import pytest

from launch.run_lock import LOCK_NAME, RunLock, RunLockedError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Takes the lock, says what happened, then holds it until its stdin closes (or it is killed).
HOLDER = r"""
import sys
from launch.run_lock import RunLock, RunLockedError
try:
  lock = RunLock(sys.argv[1]).acquire()
  print("locked", flush=True)
except RunLockedError as e:
  print("refused " + str(e), flush=True)
sys.stdin.read()
"""


def _start(model_dir):
  return subprocess.Popen([sys.executable, "-c", HOLDER, model_dir], cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO),
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, universal_newlines=True)


def _stop(child):
  if child.poll() is None:
    child.kill()
  child.wait(timeout=30)
  for pipe in (child.stdin, child.stdout):
    if not pipe.closed:
      pipe.close()


def test_a_second_process_is_refused_in_one_line_naming_the_holder(tmp_path):
  model_dir = str(tmp_path / "run")  # does not exist yet
  holder = _start(model_dir)
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(RunLockedError) as info:
      RunLock(model_dir).acquire()
    message = str(info.value)
    assert "\n" not in message and model_dir in message and "pid %d host " % holder.pid in message
    holder.stdin.close()  # the holder exits normally: the lock is free again
    assert holder.wait(timeout=30) == 0
  finally:
    _stop(holder)
  with RunLock(model_dir) as lock:
    assert lock.held
    with open(os.path.join(model_dir, LOCK_NAME)) as f:
      assert f.read().startswith("pid %d host " % os.getpid())
  assert not lock.held


def test_a_lock_left_by_a_killed_process_blocks_nobody(tmp_path):
  model_dir = str(tmp_path / "run")
  holder = _start(model_dir)
  try:
    assert holder.stdout.readline().strip() == "locked"
    os.kill(holder.pid, signal.SIGKILL)
    assert holder.wait(timeout=30) == -signal.SIGKILL
  finally:
    _stop(holder)
  with open(os.path.join(model_dir, LOCK_NAME)) as f:
    assert f.read().startswith("pid %d " % holder.pid)  # the stale file is still there...
  with RunLock(model_dir) as lock:  # ...and does not matter
    assert lock.held


def test_processes_racing_on_a_new_folder_get_exactly_one_winner(tmp_path):
  model_dir = str(tmp_path / "new" / "run")
  children = [_start(model_dir) for _ in range(4)]
  try:
    said = [child.stdout.readline().strip() for child in children]  # every child holds on until stdin closes
  finally:
    for child in children:
      _stop(child)
  assert sorted(s.split(" ", 1)[0] for s in said) == ["locked", "refused", "refused", "refused"], said
  winner = children[[s.split(" ", 1)[0] for s in said].index("locked")]
  assert all("pid %d host " % winner.pid in s for s in said if s.startswith("refused"))


def test_a_model_dir_that_is_a_file_is_one_line(tmp_path):
  path = tmp_path / "run"
  path.write_text(u"not a folder")
  with pytest.raises(ValueError) as info:
    RunLock(str(path)).acquire()
  assert str(info.value) == ("model_dir %s is a file: expected a folder for the run's checkpoints and logs" % path)
  with pytest.raises(ValueError, match=r"cannot be used \(Not a directory\)"):
    RunLock(str(path / "below")).acquire()


def test_release_is_idempotent_and_a_second_lock_in_one_process_is_refused(tmp_path):
  first = RunLock(str(tmp_path)).acquire()
  with pytest.raises(RunLockedError, match="pid %d " % os.getpid()):
    RunLock(str(tmp_path)).acquire()
  first.release()
  first.release()
  assert RunLock(str(tmp_path)).acquire().held
