"""Worker lifetime: a killed worker is a clear one-line error naming the file it was decoding (not a hang); SIGTERM,
Ctrl-C or a plain exit of the main process leaves no worker process and no shared-memory segment behind; close() is
idempotent."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from input.dataset_base import FileDataset
from input.datasets import open_dataset
from input.pipeline import InputPipeline
from input import workers as workers_lib
from input.workers import WorkerDiedError
from tests.input_helpers import DroppingQueue, noisy, write_image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The child imports TensorFlow first, as the trainer does, so the workers are forked from a threaded TF process.
CHILD = r"""
import json, os, signal, sys, time
# A runner started with SIGINT ignored (a background job) passes SIG_IGN on; Ctrl-C must mean Ctrl-C here.
signal.signal(signal.SIGINT, signal.default_int_handler)
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow.compat.v1 as tf
from input.datasets import open_dataset
from input.pipeline import InputPipeline
pipe = InputPipeline(open_dataset("digits"), 16, 64, True, workers=2, seed=0)
batches = pipe.batches()
next(batches)
print(json.dumps(pipe.worker_pids), flush=True)
if sys.argv[1] == "exit":
  sys.exit(0)  # no close(): the atexit hook must stop the workers
while True:
  next(batches)
  time.sleep(0.01)
"""


def _alive(pid):
  """True if pid is a running (non-zombie) process."""
  try:
    with open("/proc/%d/stat" % pid) as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except (IOError, OSError):
    return False


def _open_shm_names():
  """Names under /dev/shm that some live process still has open or mapped."""
  held = set()
  for pid in os.listdir("/proc"):
    if not pid.isdigit():
      continue
    try:
      for fd in os.listdir("/proc/%s/fd" % pid):
        held.add(os.readlink("/proc/%s/fd/%s" % (pid, fd)))
      with open("/proc/%s/maps" % pid) as f:
        held.update(line.split(None, 5)[-1].strip() for line in f if "/dev/shm/" in line)
    except (IOError, OSError):
      continue
  return {os.path.basename(p.replace(" (deleted)", "")) for p in held if p.startswith("/dev/shm/")}


def _wait_gone(pids, seconds=10.0):
  deadline = time.time() + seconds
  while time.time() < deadline and any(_alive(p) for p in pids):
    time.sleep(0.1)
  return [p for p in pids if _alive(p)]


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "exit"])
def test_main_process_end_leaves_no_workers_or_shared_memory(how):
  shm_before = set(os.listdir("/dev/shm"))
  env = dict(os.environ, PYTHONPATH=REPO)
  child = subprocess.Popen([sys.executable, "-c", CHILD, "exit" if how == "exit" else "run"], cwd=REPO, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
  try:
    pids = json.loads(child.stdout.readline().decode())
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    if how != "exit":
      time.sleep(0.3)
      child.send_signal(getattr(signal, how))
    child.wait(timeout=30)
  finally:
    if child.poll() is None:
      child.kill()
      child.wait()
  assert _wait_gone(pids) == []
  # Other jobs on the machine may create /dev/shm entries meanwhile: a leak is a new entry that nobody holds
  # and that is still there a moment later.
  leaked = set(os.listdir("/dev/shm")) - shm_before - _open_shm_names()
  if leaked:
    time.sleep(2.0)
    leaked &= set(os.listdir("/dev/shm")) - _open_shm_names()
  assert leaked == set(), "left in /dev/shm: %s" % sorted(leaked)


def _alarm(seconds):

  def _fail(*_):
    raise AssertionError("timed out: the consumer hung instead of reporting the dead worker")

  signal.signal(signal.SIGALRM, _fail)
  signal.alarm(seconds)


def test_killed_worker_is_a_clear_error_not_a_hang():
  pipe = InputPipeline(open_dataset("digits"), 16, 64, True, workers=2, seed=0)
  try:
    batches = pipe.batches()
    next(batches)
    victim = pipe.worker_pids[1]
    time.sleep(0.5)  # all slots filled: the victim dies idle, while the other worker could carry on alone
    os.kill(victim, signal.SIGKILL)
    _alarm(30)
    with pytest.raises(RuntimeError) as info:
      for _ in range(1000):
        next(batches)
    signal.alarm(0)
    message = str(info.value)
    assert "input worker 1 (pid %d)" % victim in message and "exit code -9" in message
    assert "SIGKILL" in message
  finally:
    signal.alarm(0)
    pipe.close()


def test_close_is_idempotent_and_stops_workers():
  pipe = InputPipeline(open_dataset("digits"), 8, 32, False, workers=2)
  pids = pipe.worker_pids
  assert all(_alive(p) for p in pids)
  pipe.close()
  pipe.close()
  assert _wait_gone(pids, 5) == []
  with pytest.raises(RuntimeError, match="closed"):
    next(pipe.batches())


class _HungFile(FileDataset):
  """Reading hung.png blocks for an hour, as a read from a hung network mount does: long enough to kill the
  worker in the middle of it, or to see it stall."""

  def read_encoded(self, i):
    if self.paths[i].endswith("hung.png"):
      time.sleep(3600)
    return super(_HungFile, self).read_encoded(i)


def _hung_folder(tmp_path):
  """(a _HungFile dataset of a.png, b.png, hung.png, their paths): in batches of 2, batch 1 is hung.png alone."""
  paths = [write_image(str(tmp_path / "c" / name), noisy(i)) for i, name in enumerate(["a.png", "b.png", "hung.png"])]
  return _HungFile("imagefolder", "val", ["c"], paths, [0, 0, 0]), paths


def _wait_reading(pipe, path):
  deadline = time.time() + 30
  while pipe._pool.current_files() != [path] and time.time() < deadline:
    time.sleep(0.05)


def test_worker_killed_while_decoding_is_one_line_naming_the_file(tmp_path):
  dataset, paths = _hung_folder(tmp_path)
  pipe = InputPipeline(dataset, 8, 2, False, workers=1)
  try:
    batches = pipe.batches()
    next(batches)  # batch 0 (a, b) comes back; batch 1 (hung) is already with the worker
    _wait_reading(pipe, paths[2])
    victim = pipe.worker_pids[0]
    os.kill(victim, signal.SIGKILL)
    _alarm(30)
    with pytest.raises(WorkerDiedError) as info:
      list(batches)
    signal.alarm(0)
  finally:
    signal.alarm(0)
    pipe.close()
  assert str(info.value) == ("input worker 0 (pid %d) died with exit code -9, killed by SIGKILL (out of memory?) while "
                             "decoding %s; the input pipeline cannot continue" % (victim, paths[2]))
  assert pipe.error is info.value


def test_stalled_worker_stops_the_pipeline_naming_the_worker_and_the_file(tmp_path):
  dataset, paths = _hung_folder(tmp_path)
  pipe = InputPipeline(dataset, 8, 2, False, workers=1, stall_seconds=1.5)
  try:
    batches = pipe.batches()
    next(batches)  # a, b
    victim = pipe.worker_pids[0]
    _alarm(30)
    started = time.time()
    with pytest.raises(workers_lib.WorkerStalledError) as info:
      list(batches)
    waited = time.time() - started
    signal.alarm(0)
  finally:
    signal.alarm(0)
    pipe.close()
  message = str(info.value)
  assert message.startswith("input worker 0 (pid %d) has made no progress for " % victim)
  assert "reading %s (the input timeout is 1.5 s)" % paths[2] in message and "\n" not in message
  assert 1.5 <= waited < 10
  assert pipe.error is info.value
  assert _wait_gone([victim], 5) == []  # close() stops a worker that is blocked in a read


def test_a_slow_consumer_is_not_a_stalled_worker(tmp_path):
  # The workers fill every slot and then wait for work much longer than the timeout: waiting is not stalling.
  pipe = InputPipeline(open_dataset("digits"), 8, 32, False, workers=2, stall_seconds=0.5)
  try:
    batches = pipe.batches()
    got = [next(batches)]
    time.sleep(2.0)
    got.extend(batches)
  finally:
    pipe.close()
  assert sum(int(b[2].sum()) for b in got) == pipe.num_examples  # every real example, none lost
  assert pipe.error is None


def test_the_parents_own_absence_counts_only_up_to_a_cap(tmp_path, monkeypatch):
  # A job suspended with Ctrl-Z and resumed later: the time the parent itself was away is not the worker's fault.
  monkeypatch.setattr(workers_lib, "_MAX_CHECK_GAP", 0.5)
  dataset, paths = _hung_folder(tmp_path)
  pipe = InputPipeline(dataset, 8, 2, False, workers=1, stall_seconds=2.0)
  try:
    batches = pipe.batches()
    next(batches)
    _wait_reading(pipe, paths[2])
    pipe._pool._check_workers()  # the stall starts being counted here
    time.sleep(3.0)  # away for longer than the timeout
    pipe._pool._check_workers()  # counts 0.5 s of the 3: no error yet
    _alarm(30)
    with pytest.raises(workers_lib.WorkerStalledError):
      list(batches)  # waiting in earnest: the stall is reported about 1.5 s later
    signal.alarm(0)
  finally:
    signal.alarm(0)
    pipe.close()


def test_a_batch_lost_between_the_processes_is_one_line_not_a_hang(monkeypatch):
  monkeypatch.setattr(workers_lib, "_LOST_SECONDS", 1.0)
  pipe = InputPipeline(open_dataset("digits"), 8, 32, False, workers=2)
  try:
    pipe._pool._tasks = DroppingQueue(pipe._pool._tasks, lose=3)
    batches = pipe.batches()
    _alarm(30)
    started = time.time()
    got = []
    with pytest.raises(workers_lib.BatchLostError) as info:
      for batch in batches:
        got.append(batch)
    waited = time.time() - started
    signal.alarm(0)
  finally:
    signal.alarm(0)
    pipe.close()
  assert len(got) == 3  # every batch before the lost one came back, in order
  message = str(info.value)
  assert message.startswith("input pipeline: 1 batch(es) were sent to the workers and never came back")
  assert "\n" not in message and pipe.error is info.value
  assert 1.0 <= waited < 10


def test_a_worker_busy_on_a_long_batch_is_not_a_lost_batch(tmp_path, monkeypatch):
  # The hung read keeps the worker's stamp set: busy, not idle, so only the stall timeout may end the wait.
  monkeypatch.setattr(workers_lib, "_LOST_SECONDS", 0.5)
  dataset, paths = _hung_folder(tmp_path)
  pipe = InputPipeline(dataset, 8, 2, False, workers=1, stall_seconds=3.0)
  try:
    batches = pipe.batches()
    next(batches)
    _alarm(30)
    with pytest.raises(workers_lib.WorkerStalledError):
      list(batches)
    signal.alarm(0)
  finally:
    signal.alarm(0)
    pipe.close()
