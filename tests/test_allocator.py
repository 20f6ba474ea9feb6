"""launch/allocator.py: when `python -m launch.train` restarts itself with tcmalloc preloaded, and what the run log
says about the allocator it really runs with (read from the process's own memory map)."""
import os
import subprocess
import sys

import pytest

from launch import allocator
from tests.train_helpers import TINY_ARGS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _library(tmp_path):
  path = tmp_path / allocator.LIBRARY
  path.write_bytes(b"")
  return str(path)


def test_the_command_line_wins_over_the_environment():
  assert allocator.requested(["train"], {}) == "auto"
  assert allocator.requested(["train"], {allocator.ENV: "system"}) == "system"
  assert allocator.requested(["train", "--malloc=tcmalloc"], {allocator.ENV: "system"}) == "tcmalloc"
  assert allocator.requested(["train", "--malloc", "system", "--malloc=auto"], {}) == "auto"


def test_restart_preloads_the_library_once_and_keeps_the_command(tmp_path):
  library = _library(tmp_path)
  environ = {allocator.LIBRARY_ENV: library, "LD_PRELOAD": "/opt/other.so", "KEEP": "1"}
  executable, argv, env = allocator.restart_command(["/x/launch/train.py", "--train_steps=2"], environ)
  assert executable == sys.executable and argv == [sys.executable, "-m", "launch.train", "--train_steps=2"]
  assert env["LD_PRELOAD"] == library + " /opt/other.so" and env["KEEP"] == "1"
  assert allocator.restart_command(["train.py"], env) is None  # the restarted process goes on
  assert allocator.restart_command(["train.py", "--malloc=system"], environ) is None
  assert allocator.restart_command(["train.py"], dict(environ, LD_PRELOAD="/lib/libtcmalloc.so.4")) is None
  assert allocator.restart_command(["train.py"], {allocator.LIBRARY_ENV: str(tmp_path / "absent.so")}) is None


def test_status_reads_the_memory_map(tmp_path, monkeypatch):
  maps = tmp_path / "maps"
  maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4.5.10\n")
  assert allocator.status("auto", str(maps)) == (True, "malloc: tcmalloc "
                                                 "(/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4.5.10)")
  maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n")
  monkeypatch.setenv(allocator.LIBRARY_ENV, str(tmp_path / "absent.so"))
  ok, line = allocator.status("tcmalloc", str(maps))
  assert not ok and "no libtcmalloc_minimal.so.4 found" in line
  assert allocator.status("system", str(maps)) == (True, "malloc: glibc's (--malloc=system)")


def _train(tmp_path, name, *args):
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
  env.pop("LD_PRELOAD", None)
  done = subprocess.run(
      [sys.executable, "-m", "launch.train",
       "--model_dir=%s" % (tmp_path / name), "--train_steps=2", "--mode=train"] + TINY_ARGS + list(args), cwd=ROOT,
      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=300)
  assert done.returncode == 0, done.stdout[-3000:]
  with open(str(tmp_path / name / "train.log")) as f:
    return [line for line in f if "malloc: " in line]


@pytest.mark.skipif(allocator.find_library() is None, reason="no tcmalloc on this machine (make setup installs it)")
def test_the_trainer_command_runs_with_tcmalloc_unless_told_not_to(tmp_path):
  (line,) = _train(tmp_path, "auto")
  assert "malloc: tcmalloc (" in line  # from /proc/self/maps of the training process: the restart took
  (line,) = _train(tmp_path, "system", "--malloc=system")
  assert "malloc: glibc's (--malloc=system)" in line
