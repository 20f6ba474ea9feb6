"""launch.train on data that is not a local path: a dataset in TF 2.x's in-memory ram:// file system trains the
same weights as its local copy (in-process: ram:// lives in one process and its forked workers), file:// URLs work
on both stacks, a remote run folder and an unreadable scheme are one line with exit code 2, and the ModelZoo
scripts pass a --data_path URL through untouched."""
import io
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from launch import run_record
from launch.flags import FlagError
from tests import input_helpers
from tests.train_helpers import read_log, run_trainer
from tools import make_tfrecords

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HAS_RAM = "ram" in getattr(tf.io.gfile, "get_registered_schemes", lambda: [])()
ARGS = [
    "--train_steps=6", "--iterations_per_loop=3", "--train_batch_size=8", "--eval_batch_size=9", "--augment=inception",
    "--workers=1"
]


def _image_folder(root, classes=3, per_class=12, val_per_class=3):
  for split, count in (("train", per_class), ("val", val_per_class)):
    for c in range(classes):
      for i in range(count):
        input_helpers.write_image(str(root / split / ("c%d" % c) / ("%d.png" % i)), input_helpers.noisy(c * 100 + i))
  return str(root)


def _final_weights(model_dir):
  reader = tf.train.NewCheckpointReader(tf.train.latest_checkpoint(model_dir))
  return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map() if not n.startswith("global_step")}


def _same_run(a, b):
  wa, wb = _final_weights(a), _final_weights(b)
  assert sorted(wa) == sorted(wb) and len(wa) > 10
  for name in wa:
    np.testing.assert_array_equal(wa[name], wb[name], err_msg=name)
  assert read_log(a)[1] == read_log(b)[1] and read_log(a)[1]  # the same evaluation results


@pytest.mark.skipif(
    not HAS_RAM, reason="TensorFlow %s has no ram:// file system (TF 2.x only); the file:// test "
    "covers this stack" % tf.__version__)
def test_a_folder_and_its_tfrecords_in_ram_train_the_same_weights_as_the_local_folder(tmp_path):
  folder = _image_folder(tmp_path / "images")
  records = str(tmp_path / "records")
  make_tfrecords.convert(folder, records, "official", splits=["train", "validation"], num_shards=2, out=io.StringIO())
  ram = "ram://%s" % str(tmp_path).strip("/")
  images_url = input_helpers.copy_to_url(folder, ram + "/images")
  records_url = input_helpers.copy_to_url(records, ram + "/records", skip_suffix=".index.npz")
  cache = str(tmp_path / "cache")
  run_trainer(str(tmp_path / "local"), "--data_dir=%s" % folder, *ARGS)
  run_trainer(str(tmp_path / "ram_images"), "--data_dir=%s" % images_url, *ARGS)
  run_trainer(str(tmp_path / "ram_records"), "--data_dir=%s" % records_url, "--cache_dir=%s" % cache, *ARGS)
  _same_run(str(tmp_path / "local"), str(tmp_path / "ram_images"))
  _same_run(str(tmp_path / "local"), str(tmp_path / "ram_records"))
  assert len(os.listdir(os.path.join(cache, "vit_tfrecord_index"))) == 4


def test_file_urls_name_local_data_and_run_folders(tmp_path):
  folder = _image_folder(tmp_path / "images")
  run_trainer(str(tmp_path / "plain"), "--data_dir=%s" % folder, *ARGS)
  run = str(tmp_path / "by_url")
  run_trainer("file://" + run, "--data_dir=file://%s/" % folder, *ARGS)
  _same_run(str(tmp_path / "plain"), run)
  flags = run_record.read_flags(run)  # recorded as the plain paths: the flagfile works without the URLs
  assert flags["data_dir"] == folder + "/" and flags["model_dir"] == run


@pytest.mark.parametrize("flag, words", [
    ("--model_dir=gs://bucket/run", ["--model_dir=gs://bucket/run: a run folder must be on a local", "fcntl"]),
    ("--cache_dir=ram://cache", ["--cache_dir=ram://cache:", "local folder"]),
    ("--data_dir=file://server/data", ["--data_dir=file://server/data: a file:// URL of another host"]),
])
def test_a_remote_run_folder_or_cache_is_refused_in_one_line(tmp_path, flag, words):
  args = [flag] + ([] if flag.startswith("--model_dir") else ["--model_dir=%s" % tmp_path])
  with pytest.raises(FlagError) as e:
    run_trainer(str(tmp_path), *args)
  assert all(w in str(e.value) for w in words) and "\n" not in str(e.value), str(e.value)
  assert not os.path.exists(os.path.join(str(tmp_path), "train.log"))


def _stderr_lines(result):
  return [l for l in result.stderr.splitlines() if "error:" in l]


def test_an_unreadable_scheme_exits_2_with_one_line_naming_it(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  result = subprocess.run([sys.executable, "-m", "launch.train",
                           "--model_dir=%s" % tmp_path, "--data_dir=foo://b/d"], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
  assert result.returncode == 2 and "Traceback" not in result.stderr
  (line,) = _stderr_lines(result)
  assert "foo://b/d: TensorFlow %s has no 'foo' file system" % tf.__version__ in line


def test_the_modelzoo_script_passes_a_data_path_url_through_and_anchors_a_relative_path(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_DISABLE_MKL="1", PYTHON=sys.executable)
  script = os.path.join(REPO, "launch", "train_performance_1p.sh")
  for data_path, expected in (("foo://bucket/imagenet", "foo://bucket/imagenet: TensorFlow"),
                              ("no_such_data", "%s does not exist" % os.path.join(str(tmp_path), "no_such_data"))):
    result = subprocess.run(
        [script, "--data_path=%s" % data_path, "--output_path=%s" % tmp_path], cwd=str(tmp_path), env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr, result.stderr
