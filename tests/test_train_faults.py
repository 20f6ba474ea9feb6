"""Storage faults: a full disk while writing (one line, exit 1, the previous checkpoint restores, the same command
resumes once space is freed; an export leaves nothing), damaged checkpoints (the newest usable one is resumed, the
broken ones named; none usable: one line, exit 2, nothing deleted), a read-only run folder at start and one that
vanishes mid-run."""
import glob
import os
import shutil
import subprocess
import sys
import time

import pytest
import tensorflow.compat.v1 as tf

from input import dataset_base
from input import workers as workers_lib
from launch import checkpoints
from launch import errors
from launch import metrics
from launch import monitors
from launch import run_record
from launch import storage
from tests import input_helpers
from tests import tool_helpers
from tests.train_helpers import TINY_ARGS, log_text, read_metrics, run_trainer
from tools import compare_checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWO_LOOPS = ["--train_steps=8", "--iterations_per_loop=4", "--save_every_loops=1", "--mode=train"]
# A checkpoint of ~430 KB: bigger than what a run writes to its logs and TensorBoard (~270 KB with the graph).
WIDE = ["--hidden_size=64", "--mlp_dim=256", "--iterations_per_loop=2", "--mode=train"]


def _trainer(model_dir, *args):
  """Runs launch.train as a process; (exit code, stderr)."""
  command = [sys.executable, "-m", "launch.train", "--model_dir=%s" % model_dir] + TINY_ARGS + list(args)
  proc = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=300)
  return proc.returncode, proc.stderr


def _error_lines(stderr):
  return [l for l in stderr.splitlines() if l.startswith("launch.train: error: ")]


@pytest.fixture
def small_disk(tmp_path):
  """A 4 MB tmpfs mounted for the test (skipped where mounting is not permitted)."""
  mount = tmp_path / "disk"
  mount.mkdir()
  done = subprocess.run(
      ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], stderr=subprocess.PIPE, universal_newlines=True)
  if done.returncode != 0:
    pytest.skip("cannot mount a tmpfs for the full-disk tests (%s); they need root" % done.stderr.strip())
  yield str(mount)
  subprocess.run(["umount", "-l", str(mount)])


def _fill(folder, leave):
  """Fills the file system of `folder` up to `leave` free bytes with one file; returns its path."""
  path = os.path.join(folder, "filler")
  fd = os.open(path, os.O_WRONLY | os.O_CREAT)
  try:
    while True:
      os.write(fd, b"\0" * 65536)
  except OSError:
    pass
  os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave))
  os.close(fd)
  return path


def _resumed_from(model_dir):
  return read_metrics(model_dir, "run")[-1]["step"]


def test_a_full_disk_at_the_checkpoint_is_one_line_and_the_same_command_resumes_once_space_is_freed(small_disk):
  d = os.path.join(small_disk, "run")
  run_trainer(d, "--train_steps=4", *WIDE)
  filler = _fill(small_disk, leave=320 * 1024)  # room for the logs and the event file, not for the checkpoint
  code, err = _trainer(d, "--train_steps=8", *WIDE)
  assert code == 1 and "Traceback" not in err, err[-3000:]
  (line,) = _error_lines(err)
  assert ("cannot write checkpoint model.ckpt-8 to %s: the disk is full (ENOSPC); the last good checkpoint "
          "model.ckpt-4 is intact; free space and rerun the same command to resume" % d) in line
  assert not [n for n in os.listdir(d) if "tempstate" in n or ".tmp" in n or "_temp_" in n]  # no half-written file
  assert tf.train.latest_checkpoint(d).endswith("model.ckpt-4") and checkpoints.problem(d + "/model.ckpt-4") is None
  os.remove(filler)
  summary = run_trainer(d, "--train_steps=8", *WIDE)
  assert summary["steps"] == 8 and _resumed_from(d) == 4


def test_a_full_disk_under_metrics_tensorboard_and_train_log_is_one_error_each_and_no_logging_traceback(
    small_disk, capfd):
  log = monitors.RunLog(small_disk)
  log.start_file()
  writers = [
      monitors.ConsoleMonitor(),
      metrics.JsonlWriter(os.path.join(small_disk, metrics.METRICS_FILE)),
      monitors.TensorBoardMonitor(small_disk)
  ]
  out = monitors.Monitors(writers, small_disk, log)
  # Larger than a page, so that no write fits in the last page of a file (tmpfs counts whole pages).
  record = {"event": "run", "step": 0, "text": "x" * 9000, "flags": ["--a=" + "y" * 9000]}
  out.put(record)
  _fill(small_disk, leave=0)
  failed = []
  for _ in range(3):
    with pytest.raises(storage.StorageFailed) as e:
      out.put(record)
    failed.append(str(e.value))
  assert [m.split(" to ")[0] for m in failed
         ] == ["cannot write metrics.jsonl", "cannot write TensorBoard events", "cannot write train.log"]
  assert all("the disk is full (ENOSPC)" in m and small_disk in m and "\n" not in m for m in failed)
  out.put(record)  # the console goes on; nothing is raised twice
  out.close()
  log.close()
  assert "Traceback" not in capfd.readouterr().err


def _two_checkpoints(tmp_path):
  d = str(tmp_path / "run")
  run_trainer(d, *TWO_LOOPS)
  assert os.path.exists(d + "/model.ckpt-4.index") and os.path.exists(d + "/model.ckpt-8.index")
  return d


def _truncate(prefix):
  (data,) = glob.glob(prefix + ".data-*")
  with open(data, "r+b") as f:
    f.truncate(os.path.getsize(data) // 2)


def _flip_bytes(prefix):
  (data,) = glob.glob(prefix + ".data-*")
  with open(data, "r+b") as f:
    f.seek(os.path.getsize(data) // 2)
    chunk = f.read(64)
    f.seek(-len(chunk), 1)
    f.write(bytes(b ^ 0xFF for b in chunk))


def _other_model_as_step_20(tmp_path, d):
  other = str(tmp_path / "other")
  run_trainer(other, "--hidden_size=24", "--train_steps=4", "--iterations_per_loop=4", "--mode=train")
  for path in glob.glob(other + "/model.ckpt-4.*"):
    shutil.copy(path, d + "/model.ckpt-20" + path[len(other + "/model.ckpt-4"):])


@pytest.mark.parametrize("damage,broken,reason,resumed", [
    ("truncated data", "model.ckpt-8", "its .data is truncated", 4),
    ("missing index", "model.ckpt-8", "its .index file is missing", 4),
    ("flipped bytes", "model.ckpt-8", "its data is damaged", 4),
    ("garbage state file", None, None, 8),
    ("another model", "model.ckpt-20", "it is a checkpoint of another model", 8),
])
def test_a_damaged_latest_checkpoint_falls_back_to_the_newest_usable_one_naming_it(tmp_path, damage, broken, reason,
                                                                                   resumed):
  d = _two_checkpoints(tmp_path)
  if damage == "truncated data":
    _truncate(d + "/model.ckpt-8")
  elif damage == "missing index":
    os.remove(d + "/model.ckpt-8.index")
  elif damage == "flipped bytes":
    _flip_bytes(d + "/model.ckpt-8")
  elif damage == "garbage state file":
    with open(d + "/checkpoint", "w") as f:
      f.write("\x00garbage {{{\n")
    assert tf.train.latest_checkpoint(d) is None  # what TF alone would make of it: a fresh start
  else:
    _other_model_as_step_20(tmp_path, d)
  if damage in ("truncated data", "missing index", "garbage state file"):  # the tools pick the same checkpoint
    assert run_record.run_model(d).checkpoint == d + "/model.ckpt-%d" % resumed
    assert compare_checkpoints.load(d)["global_step"] == resumed
  summary = run_trainer(d, "--train_steps=12", "--iterations_per_loop=4", "--save_every_loops=1", "--mode=train")
  assert summary["steps"] == 12 and _resumed_from(d) == resumed
  warned = [l for l in log_text(d).splitlines() if "cannot be resumed from" in l]
  if broken is None:
    assert warned == []
  else:
    (line,) = warned
    assert "%s/%s cannot be resumed from: %s" % (d, broken, reason) in line


def test_no_usable_checkpoint_stops_with_one_line_exit_2_and_deletes_nothing(tmp_path):
  d = _two_checkpoints(tmp_path)
  _truncate(d + "/model.ckpt-8")
  os.remove(d + "/model.ckpt-4.index")
  kept = {p: os.path.getsize(p) for p in glob.glob(d + "/model.ckpt-*")}
  code, err = _trainer(d, *TWO_LOOPS[1:] + ["--train_steps=12"])
  assert code == 2 and "Traceback" not in err, err[-3000:]
  (line,) = _error_lines(err)
  assert "--model_dir=%s holds checkpoints but none can be resumed from" % d in line
  assert "model.ckpt-8: its .data is truncated" in line and "model.ckpt-4: its .index file is missing" in line
  assert "nothing was deleted" in line
  assert {p: os.path.getsize(p) for p in glob.glob(d + "/model.ckpt-*")} == kept
  assert [r["step"] for r in read_metrics(d, "train")] == [4, 8]  # nothing was trained from scratch


def test_a_read_only_run_folder_is_refused_before_training_naming_it(small_disk):
  d = os.path.join(small_disk, "run")
  run_trainer(d, "--train_steps=4", "--iterations_per_loop=4", "--mode=train")
  before = {p: os.path.getsize(p) for p in glob.glob(d + "/*")}
  subprocess.run(["mount", "-o", "remount,ro", small_disk], check=True)
  try:
    with pytest.raises(errors.UsageError) as e:
      run_trainer(d, "--train_steps=8", "--iterations_per_loop=4", "--mode=train")
    assert str(e.value).startswith("--model_dir=%s is not writable" % d)
    # The check after the lock, which creates a file: permission bits and os.access can be wrong (NFS, ACLs).
    with pytest.raises(errors.UsageError) as e:
      storage.check_writable(d)
    assert "--model_dir=%s cannot be written now (the file system is read-only)" % d in str(e.value)
  finally:
    subprocess.run(["mount", "-o", "remount,rw", small_disk], check=True)
  assert {p: os.path.getsize(p) for p in glob.glob(d + "/*")} == before


def test_a_run_folder_deleted_mid_run_stops_the_run_with_one_line(tmp_path):
  d = str(tmp_path / "run")
  command = [sys.executable, "-m", "launch.train", "--model_dir=%s" % d
            ] + TINY_ARGS + ["--train_steps=100000", "--iterations_per_loop=5", "--save_every_loops=4", "--mode=train"]
  proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, universal_newlines=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  try:
    deadline = time.time() + 120
    while not glob.glob(d + "/model.ckpt-*.index") and time.time() < deadline and proc.poll() is None:
      time.sleep(0.1)
    # The trainer may add a file between rmtree's listing and its rmdir ("Directory not empty", seen in CI on TF
    # 2.21): rm -rf of a live folder meets that too, and is run again.
    for _ in range(100):
      shutil.rmtree(d, ignore_errors=True)
      if not os.path.exists(d):
        break
      time.sleep(0.05)
    assert not os.path.exists(d)
    err = proc.communicate(timeout=120)[1]
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 1 and "Traceback" not in err, err[-3000:]
  (line,) = _error_lines(err)
  assert d in line and ("vanished at step" in line or "the folder no longer exists" in line)


class _SaverWhoseFolderVanishes(object):
  """Stand-in for tf.train.Saver in the race the test above can meet (seen in CI on TF 1.15): the folder goes
  after the data is written and before the `checkpoint` file is, and the Saver raises the ValueError it raises then."""

  def __init__(self, folder, vanish=True):
    self.folder, self.vanish = folder, vanish

  def save(self, sess, prefix, global_step):
    del sess, global_step
    if self.vanish:
      shutil.rmtree(self.folder)
    raise ValueError("Parent directory of %s doesn't exist, can't save." % prefix)


def test_a_folder_that_vanishes_under_the_saver_is_one_storage_line(tmp_path):
  d = str(tmp_path / "run")
  os.makedirs(d)
  with tf.Graph().as_default():
    tf.get_variable("w", [2], initializer=tf.zeros_initializer())
    saver = checkpoints.Checkpoints(d, keep=2)
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      first = saver.save(sess, 4)
      saver.saver = _SaverWhoseFolderVanishes(d)
      with pytest.raises(storage.StorageFailed) as e:
        saver.save(sess, 8)
      os.makedirs(d)
      saver.saver = _SaverWhoseFolderVanishes(d, vanish=False)  # a ValueError while the folder exists is no storage
      with pytest.raises(ValueError):
        saver.save(sess, 12)
  assert first.endswith("model.ckpt-4")
  assert "the folder no longer exists (ENOENT)" in str(e.value) and "model.ckpt-4 is intact" in str(e.value)


def test_a_full_disk_under_an_export_is_one_line_and_leaves_nothing(small_disk, tmp_path):
  run = tool_helpers.write_run(str(tmp_path / "run"), tool_helpers.tiny_params())
  _fill(small_disk, leave=8 * 1024)
  out = os.path.join(small_disk, "vit")
  done = tool_helpers.run_tool("tools.export", "--model_dir=%s" % run, "--format=saved_model", "--out=%s" % out)
  assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
  (line,) = tool_helpers.error_lines(done.stderr)
  assert line == ("error: cannot write the saved_model export vit to %s: the disk is full (ENOSPC); nothing was "
                  "written at %s" % (small_disk, out))
  assert os.listdir(small_disk) == ["filler"]  # the temporary folder is gone too


def test_a_stalled_input_worker_stops_the_run_naming_the_worker_and_the_file(tmp_path, monkeypatch):
  """A read that blocks (a hung network mount; here a stand-in: FileDataset.read_encoded sleeps for one file)
  stops the run after --input_timeout with the pipeline's one line, instead of hanging it forever."""
  data = tmp_path / "data"
  for split in ("train", "val"):
    for c in range(2):
      for i in range(6):
        input_helpers.write_image(str(data / split / ("c%d" % c) / ("%d.png" % i)), input_helpers.noisy(10 * c + i))
  hung = str(data / "train" / "c1" / "3.png")
  read_encoded = dataset_base.FileDataset.read_encoded

  def blocking_read(self, i):
    if self.paths[i] == hung:
      time.sleep(3600)
    return read_encoded(self, i)

  monkeypatch.setattr(dataset_base.FileDataset, "read_encoded", blocking_read)
  d = str(tmp_path / "run")
  started = time.time()
  with pytest.raises(errors.InputFailed) as info:
    run_trainer(d, "--data_dir=%s" % data, "--workers=1", "--input_timeout=2", "--train_batch_size=4", "--num_epochs=2",
                "--iterations_per_loop=1", "--mode=train")
  assert time.time() - started < 120
  message = str(info.value)
  assert message.startswith("input worker 0 (pid ") and "has made no progress for " in message
  assert "reading %s (the input timeout is 2 s)" % hung in message and "\n" not in message
  assert message.endswith("--input_timeout sets the limit; the checkpoints so far are intact: rerun the same command "
                          "to resume once the data is readable")


def test_a_batch_lost_by_the_input_workers_stops_the_run_with_one_line(tmp_path, monkeypatch):
  """A task that never reaches the workers (a stand-in queue drops the train pipeline's 6th) stops the run with the
  pipeline's one line after the lost-batch wait, instead of hanging it forever."""
  monkeypatch.setattr(workers_lib, "_LOST_SECONDS", 1.0)
  init = workers_lib.WorkerPool.__init__

  def init_losing_a_task(self, *args, **kwargs):
    init(self, *args, **kwargs)
    self._tasks = input_helpers.DroppingQueue(self._tasks, lose=5)

  monkeypatch.setattr(workers_lib.WorkerPool, "__init__", init_losing_a_task)
  d = str(tmp_path / "run")
  started = time.time()
  with pytest.raises(errors.InputFailed) as info:
    run_trainer(d, "--workers=1", "--iterations_per_loop=1", "--mode=train")
  assert time.time() - started < 120
  message = str(info.value)
  assert message.startswith("input pipeline: 1 batch(es) were sent to the workers and never came back")
  assert "\n" not in message
  assert message.endswith("the checkpoints so far are intact: rerun the same command to resume")
