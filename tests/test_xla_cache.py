"""launch/xla_cache.py: TensorFlow's persistent XLA compilation cache, one folder per TF version and CPU, damaged
entries removed before TensorFlow can fail the run on them; and the trainer run twice on TF 2.x, the second time
loading every cluster the first one compiled."""
import glob
import os
import re
import subprocess
import sys

import pytest
import tensorflow.compat.v1 as tf

from launch import xla_cache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TF2 = xla_cache.supported(tf.__version__)


def _cpuinfo(tmp_path, name, model, flags):
  path = str(tmp_path / name)
  with open(path, "w") as f:
    for cpu in range(2):
      f.write("processor\t: %d\nvendor_id\t: AuthenticAMD\nmodel name\t: %s\nflags\t\t: %s\n\n" % (cpu, model, flags))
  return path


def test_the_cpu_key_follows_the_model_and_the_feature_flags_not_their_order(tmp_path):
  zen = xla_cache.cpu_key(_cpuinfo(tmp_path, "a", "AMD EPYC", "avx2 avx512f avx512_bf16"))
  assert zen == xla_cache.cpu_key(_cpuinfo(tmp_path, "b", "AMD EPYC", "avx512_bf16 avx2 avx512f"))
  assert zen != xla_cache.cpu_key(_cpuinfo(tmp_path, "c", "AMD EPYC", "avx2 avx512f"))  # no bf16: other code
  assert zen != xla_cache.cpu_key(_cpuinfo(tmp_path, "d", "Intel Xeon", "avx2 avx512f avx512_bf16"))
  assert re.match(r"^[0-9a-f]{12}$", zen)
  assert xla_cache.cpu_key(str(tmp_path / "missing")) == "unknown"


@pytest.fixture(autouse=True)
def _own_state(monkeypatch):
  """enable() remembers its line for the trainer's log; these tests keep that to themselves."""
  monkeypatch.setattr(xla_cache, "_STATE", {})


def test_only_tensorflow_releases_with_the_flag_get_it():
  assert [xla_cache.supported(v) for v in ("1.15.5", "2.11.0", "2.12.0", "2.21.0", "nightly")
         ] == [False, False, True, True, False]
  environ = {}
  assert xla_cache.enable("/nowhere", environ=environ, version="1.15.5") is None
  assert environ == {}  # TF 1.15 aborts on a TF_XLA_FLAGS flag it does not know


def test_enable_points_tf_at_a_folder_per_version_and_cpu_and_keeps_other_flags(tmp_path):
  environ = {"TF_XLA_FLAGS": "--tf_xla_cpu_global_jit"}
  line = xla_cache.enable(str(tmp_path), environ=environ, version="2.21.0")
  path = os.path.join(str(tmp_path), "vit_xla", "tf2.21.0-%s" % xla_cache.cpu_key())
  assert environ["TF_XLA_FLAGS"] == "--tf_xla_cpu_global_jit %s=%s" % (xla_cache.FLAG, path)
  assert os.path.isdir(path) and os.listdir(path) == []  # the writability probe is gone
  assert line == "xla cache: %s (0 compiled clusters from earlier runs)" % path
  assert xla_cache.enabled_line() == line
  users = {"TF_XLA_FLAGS": "%s=/mine" % xla_cache.FLAG}
  assert xla_cache.enable(str(tmp_path), environ=users, version="2.21.0") is None  # the user's own folder stays
  assert users == {"TF_XLA_FLAGS": "%s=/mine" % xla_cache.FLAG}


def test_a_folder_that_cannot_be_written_leaves_the_cache_off_with_one_line(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text(u"not a folder")
  environ = {}
  line = xla_cache.enable(str(blocker), environ=environ, version="2.21.0")
  assert line.startswith("xla cache: off (%s" % os.path.join(str(blocker), "vit_xla"))
  assert "is not writable" in line and line.endswith("every run compiles its XLA clusters")
  assert environ == {}
  assert xla_cache.enable("gs://bucket/cache", environ=environ,
                          version="2.21.0").startswith("xla cache: off (--cache_dir=gs://bucket/cache is a URL")


def test_damaged_entries_are_removed_and_whole_ones_kept(tmp_path):
  whole = tf.GraphDef()
  for i in range(20):
    whole.node.add(name="n%d" % i, op="Const")
  data = whole.SerializeToString()
  for name, body in (("a.pb", data), ("b.pb", data[:len(data) // 2]), ("c.pb", data[:-3]), ("d.pb", b"")):
    (tmp_path / name).write_bytes(body)
  (tmp_path / "e.pb.tmp").write_bytes(data[:5])  # TensorFlow's own temporary file: never read, left alone
  assert xla_cache.prune(str(tmp_path)) == (1, 3)
  assert sorted(os.listdir(str(tmp_path))) == ["a.pb", "e.pb.tmp"]


def _train(model_dir, cache_dir):
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
  env.pop("TF_XLA_FLAGS", None)
  args = [
      sys.executable, "-m", "launch.train",
      "--model_dir=%s" % model_dir, "--train_steps=6", "--iterations_per_loop=3", "--mode=train", "--model=tiny",
      "--hidden_size=16", "--num_layers=1", "--num_heads=2", "--mlp_dim=32", "--image_size=8", "--patch_size=4",
      "--train_batch_size=16", "--workers=0", "--kernels=xla", "--xla_cache",
      "--cache_dir=%s" % cache_dir, "--malloc=system"
  ]
  done = subprocess.run(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        universal_newlines=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  return done.stderr


def test_a_refused_command_line_leaves_no_cache_folder_behind(tmp_path):
  cache = str(tmp_path / "cache")
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
  done = subprocess.run([
      sys.executable, "-m", "launch.train",
      "--model_dir=%s" % (tmp_path / "run"), "--xla_cache",
      "--cache_dir=%s" % cache, "--malloc=system", "--train_steps=5", "--num_epochs=1"
  ], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=300)
  assert done.returncode == 2 and done.stderr.strip().splitlines()[-1] == (
      "launch.train: error: --num_epochs and --train_steps conflict: give one of them")
  assert not os.path.exists(cache) and not os.path.exists(str(tmp_path / "run"))


@pytest.mark.skipif(not TF2, reason="TF 1.15 has no persistent XLA cache")
def test_a_second_run_loads_every_cluster_the_first_compiled_and_trains_the_same(tmp_path):
  cache = str(tmp_path / "cache")
  first = _train(str(tmp_path / "a"), cache)
  entries = {p: os.path.getmtime(p) for p in glob.glob(os.path.join(cache, "vit_xla", "*", "*.pb"))}
  assert len(entries) >= 4, first[-2000:]  # layer norms, GELU, softmax and their gradients
  assert "xla cache: " in first and "(0 compiled clusters from earlier runs)" in first
  second = _train(str(tmp_path / "b"), cache)
  assert "(%d compiled clusters from earlier runs)" % len(entries) in second
  after = {p: os.path.getmtime(p) for p in glob.glob(os.path.join(cache, "vit_xla", "*", "*.pb"))}
  assert after == entries  # nothing compiled (and written) again: the keys are stable across processes
  loss = lambda text: re.findall(r"final_loss ([0-9.]+)", text)  # noqa: E731
  assert loss(first) and loss(first) == loss(second)
