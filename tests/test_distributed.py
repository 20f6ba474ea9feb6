"""The data-parallel pieces that one process can check: engine choice and its one-line errors, packing, gradient
accumulation, the NPU step rounding (multi-process runs: tests/test_distributed_ranks.py)."""
import json
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from launch import distributed
from launch import engines
from launch import spawn
from launch.flags import FlagError
from tests.train_helpers import run_trainer

_CLEAN = ("TF_CONFIG", "RANK_ID", "RANK_SIZE", "RANK_TABLE_FILE", "HOROVOD_RANK", "OMPI_COMM_WORLD_SIZE")


def _resolve(distribute="auto", device="cpu", rank=None, num_ranks=None, **env):
  return distributed.resolve_engine(distribute, device, rank, num_ranks, environ=env)


def test_auto_picks_the_engine_the_launcher_set_up():
  assert _resolve().name == "single"
  workers = spawn.tf_config([2001, 2002, 2003], 2)
  engine = _resolve(TF_CONFIG=workers)
  assert (engine.name, engine.rank, engine.size) == ("collective", 2, 3)
  assert engine.peers() == {0: ("localhost", 2001), 1: ("localhost", 2002)}
  assert _resolve(TF_CONFIG=workers, RANK_ID="2", RANK_SIZE="3").rank == 2  # the 8p scripts export both


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_ranks=2), "--num_ranks=2 on cpu needs a data-parallel engine"),
    (dict(RANK_SIZE="2"), "RANK_SIZE=2 on cpu needs a data-parallel engine"),
    (dict(distribute="collective"), "TF_CONFIG is not set"),
    (dict(TF_CONFIG="{\"cluster\": {}}"), "is not {\"cluster\""),
    (dict(TF_CONFIG=spawn.tf_config([1, 2], 0), num_ranks=3), "--num_ranks=3 disagrees with TF_CONFIG"),
    (dict(TF_CONFIG=spawn.tf_config([1, 2], 1), RANK_ID="0"), "RANK_ID=0 disagrees with TF_CONFIG"),
    (dict(distribute="hccl"), "--distribute=hccl needs the NPU"),
])  # yapf: disable
def test_a_run_that_would_train_alone_or_hang_is_one_line(kwargs, message):
  with pytest.raises(ValueError) as e:
    _resolve(**kwargs)
  assert message in str(e.value) and "\n" not in str(e.value)


def test_without_horovod_the_horovod_engine_is_one_line(monkeypatch):

  def missing():
    raise ImportError("No module named 'horovod'")

  monkeypatch.setattr(engines, "horovod_module", missing)
  with pytest.raises(ValueError) as e:
    _resolve(distribute="horovod")
  assert "Horovod does not import (No module named 'horovod')" in str(e.value)


def test_num_ranks_without_an_engine_stops_before_the_run_folder_is_written(tmp_path, monkeypatch):
  for name in _CLEAN:
    monkeypatch.delenv(name, raising=False)
  with pytest.raises(FlagError) as e:
    run_trainer(str(tmp_path / "run"), "--num_ranks=2", "--train_steps=4")
  assert "launch.spawn" in str(e.value)
  assert not os.path.exists(str(tmp_path / "run" / "train.log"))


def test_packing_puts_many_tensors_in_few_buffers_and_back():
  rs = np.random.RandomState(0)
  values = [np.asarray(rs.randn(*shape), np.float32) for shape in ([3, 4], [5], [], [2, 2, 2], [7])]
  tensors = [tf.constant(v) for v in values]
  calls = []

  def fn(flat):
    calls.append(int(flat.shape[0]))
    return flat * 2.0

  out = distributed.packed(tensors, fn, limit_bytes=4 * 20)
  assert calls == [18, 15]  # buckets of at most 20 floats (12+5+1, 8+7), a tensor never split
  with tf.Session() as sess:
    for got, want in zip(sess.run(out), values):
      np.testing.assert_array_equal(got, want * 2.0)
  del calls[:]
  distributed.packed(tensors, fn, limit_bytes=0)
  assert len(calls) == len(values)


def test_rank_table_is_read_as_ascend_writes_it(tmp_path):
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "8p.json")
  assert distributed.rank_table_devices(path) == list(range(8))
  bad = tmp_path / "bad.json"
  bad.write_text(json.dumps({"server_list": [{"device": [{"device_id": "0"}]}]}))
  with pytest.raises(ValueError) as e:
    distributed.rank_table_devices(str(bad))
  assert "rank_id" in str(e.value)


def _checkpoint(model_dir):
  reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(model_dir))
  return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}


def test_accumulating_4_micro_batches_equals_one_batch_4_times_larger(tmp_path):
  args = ["--train_steps=6", "--iterations_per_loop=3", "--mode=train", "--augment=none", "--grad_clip_norm=0.5"]
  small = run_trainer(str(tmp_path / "k4"), "--train_batch_size=8", "--accum_steps=4", *args)
  large = run_trainer(str(tmp_path / "k1"), "--train_batch_size=32", *args)
  a, b = _checkpoint(str(tmp_path / "k4")), _checkpoint(str(tmp_path / "k1"))
  assert int(a["global_step"]) == 6 and sorted(a) == sorted(b)
  for name in a:
    np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-5, err_msg=name)
  assert small["final_loss"] == pytest.approx(large["final_loss"], rel=1e-4)
  text = open(str(tmp_path / "k4" / "train.log")).read()
  assert "global batch 32 = 8 per rank x 4 micro-batches" in text


def test_the_global_batch_is_described_term_by_term():
  layout = distributed.Layout(per_rank=32, accum_steps=2, num_ranks=8)
  assert distributed.describe_global_batch(layout) == "512 = 32 per rank x 2 micro-batches x 8 ranks"
  assert distributed.describe_global_batch(distributed.Layout(64, 1, 1)) == "64"


def test_lr_is_the_global_batch_s_unless_scaled_by_ranks(monkeypatch):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from launch import plan as plan_lib  # pylint: disable=g-import-not-at-top
  from tests.train_helpers import TINY_ARGS  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(distributed, "resolve_engine",
                      lambda *args, **kwargs: engines.Collective(["localhost:1", "localhost:2"], 1))
  fv = flags.FLAGS
  try:
    for extra, lr in (([], 0.05), (["--scale_lr_by_ranks"], 0.1)):
      fv.unparse_flags()
      fv(["launch.train", "--model_dir=/tmp/unused"] + TINY_ARGS + ["--train_steps=4"] + extra)
      plan = plan_lib.make_plan(fv)
      assert (plan.dist.num_ranks, plan.dist.rank, plan.optim.lr) == (2, 1, lr)
      assert any("--scale_lr_by_ranks with 2 ranks" in n for n in plan.notes) == bool(extra)
  finally:
    fv.unparse_flags()
