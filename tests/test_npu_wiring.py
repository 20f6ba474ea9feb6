"""The NPU wiring of launch/npu.py and the trainer, checked against tests/fake_npu_bridge.

tests/fake_npu_bridge is a STAND-IN written for these tests, not Ascend's npu_bridge: it records the calls and
passes everything through, so on this CPU machine it shows which adapter calls the trainer makes with which values;
it cannot show that the Ascend adapter accepts them.
"""
import json
import os

import pytest
import tensorflow.compat.v1 as tf
from tensorflow.core.protobuf.rewriter_config_pb2 import RewriterConfig

from launch import device as device_lib
from launch import npu
from launch.flags import FlagError
from tests.train_helpers import read_log, run_trainer


def _calls(bridge, name):
  return [args for called, args in bridge.CALLS if called == name]


def test_without_npu_bridge_the_npu_is_not_available(monkeypatch):
  monkeypatch.setattr(npu, "_STATE", {})
  assert not npu.available() and "npu_bridge" in npu.import_error()


def test_the_trainers_flags_reach_the_adapter_options(fake_bridge, tmp_path, monkeypatch):
  configs = []
  real = device_lib.session_config
  monkeypatch.setattr(device_lib, "session_config", lambda plan: configs.append(real(plan)) or configs[-1])
  d = str(tmp_path)
  run_trainer(d, "--device=npu", "--train_steps=6", "--iterations_per_loop=3", "--mode=train",
              "--precision_mode=force_fp16", "--over_dump", "--data_dump_flag", "--data_dump_step=3|5", "--profiling",
              "--fusion_switch_file=/cfg/fusion.json", "--over_dump_path=%s/dumps" % d)
  (config,) = configs
  (op,) = config.graph_options.rewrite_options.custom_optimizers
  p = op.parameter_map
  assert op.name == "NpuOptimizer" and p["use_off_line"].b  # run on the Ascend device, not the host
  assert p["precision_mode"].s == b"force_fp16" and p["iterations_per_loop"].i == 3
  assert p["enable_dump_debug"].b and p["enable_dump"].b and p["dump_step"].s == b"3|5"
  # One dump_path on the NPU: --over_dump_path serves both dumps when --data_dump_path is not given.
  assert p["dump_path"].s.decode() == os.path.abspath(os.path.join(d, "dumps"))
  assert p["profiling_mode"].b and json.loads(p["profiling_options"].s)["output"] == os.path.abspath(
      os.path.join(d, "profile"))
  assert p["fusion_switch_file"].s == b"/cfg/fusion.json"
  # The adapter does its own fusions and memory planning; grappler's would conflict with them.
  assert config.graph_options.rewrite_options.remapping == RewriterConfig.OFF
  assert config.graph_options.rewrite_options.memory_optimization == RewriterConfig.OFF
  (loop_call,) = _calls(fake_bridge, "set_iteration_per_loop")
  assert loop_call["iterations_per_loop"] == 3


def test_dynamic_loss_scale_halves_on_every_overflow_and_doubles_after_growth_steps(fake_bridge):
  npu.loss_scale_optimizer(tf.train.GradientDescentOptimizer(0.1), "dynamic", 1024.0, 3)
  manager = _calls(fake_bridge, "NPULossScaleOptimizer")[0]["loss_scale_manager"]
  finite = [False, True, True, True, False, False, True]
  # The trainer's own CPU/GPU loss scaling (launch/loss_scale.py) means the same sequence: halve at once, double
  # after 3 good steps in a row.
  assert [manager.update_loss_scale(f) for f in finite] == [512.0, 512.0, 512.0, 1024.0, 512.0, 256.0, 256.0]


def test_fixed_loss_scale_manager_keeps_the_given_scale(fake_bridge):
  opt = tf.train.GradientDescentOptimizer(0.1)
  npu.loss_scale_optimizer(opt, "fixed", 1024.0, 1000)
  assert _calls(fake_bridge, "FixedLossScaleManager") == [{"loss_scale": 1024.0}]
  assert all(c["opt"] is opt for c in _calls(fake_bridge, "NPULossScaleOptimizer"))


def _rank_table(path, size):
  table = {
      "server_count": "1",
      "server_list": [{
          "server_id":
              "10.0.0.1",
          "device": [{
              "device_id": str(i),
              "device_ip": "192.168.100.%d" % (101 + i),
              "rank_id": str(i)
          } for i in range(size)]
      }],
      "status": "completed",
      "version": "1.0"
  }
  with open(path, "w") as f:
    json.dump(table, f)
  return path


@pytest.fixture
def two_npus(monkeypatch, tmp_path):
  """The environment Ascend's launch gives rank 1 of 2: RANK_SIZE, RANK_ID and a rank table."""
  monkeypatch.setenv("RANK_SIZE", "2")
  monkeypatch.setenv("RANK_ID", "1")
  monkeypatch.setenv("RANK_TABLE_FILE", _rank_table(str(tmp_path / "2p.json"), 2))


def test_trainer_on_npu_wires_loop_loss_scale_and_distribution(fake_bridge, two_npus, tmp_path):
  configs = []
  real = device_lib.session_config
  d = str(tmp_path / "run")
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(device_lib, "session_config", lambda plan: configs.append(real(plan)) or configs[-1])
    run_trainer(d, "--device=npu", "--train_steps=8", "--iterations_per_loop=4", "--mode=train",
                "--precision_mode=allow_mix_precision", "--num_ranks=2", "--rank=1", "--loss_scale_init=4096")
  (loop_call,) = _calls(fake_bridge, "set_iteration_per_loop")
  assert loop_call["iterations_per_loop"] == 4
  assert loop_call["train_op"].type == "NoOp"
  # Mixed precision on the NPU means float16 inside: dynamic loss scaling by npu_bridge's optimizer (told that the
  # run is distributed, so it sums the overflow status over the ranks), wrapping our momentum optimizer.
  (ls_call,) = _calls(fake_bridge, "NPULossScaleOptimizer")
  assert ls_call["is_distributed"] is True
  assert isinstance(ls_call["opt"], tf.train.MomentumOptimizer)
  assert _calls(fake_bridge, "NPULossScaleOptimizer.compute_gradients")
  # The gradient all-reduce is the trainer's seam over hccl_ops (packed buffers, so no HCCL fusion on top), not
  # NPUDistributedOptimizer, which would silently skip it without RANK_SIZE.
  assert not _calls(fake_bridge, "NPUDistributedOptimizer")
  reduces = _calls(fake_bridge, "hccl_ops.allreduce")
  assert reduces and all(c["reduction"] == "sum" and c["fusion"] == 0 for c in reduces)
  grads_in_step = [c for c in reduces if "train_loop" not in c["tensor"].name and c["tensor"].shape.ndims == 1]
  assert grads_in_step and sum(int(c["tensor"].shape[0]) for c in grads_in_step) > 1000  # the packed gradients
  broadcasts = _calls(fake_bridge, "hccl_ops.broadcast")
  assert broadcasts and all(c["root_rank"] == 0 and isinstance(c["tensor"], list) for c in broadcasts)
  (config,) = configs
  (op,) = config.graph_options.rewrite_options.custom_optimizers
  assert op.parameter_map["hcom_parallel"].b
  train, _, _ = read_log(d) if os.path.exists(os.path.join(d, "train.log")) else ([], [], [])
  # Rank 1 writes no train.log (rank 0's alone); its lines went to the console.
  assert not train


def test_on_one_npu_the_run_is_single_and_counts_real_steps(fake_bridge, tmp_path):
  d = str(tmp_path)
  run_trainer(d, "--device=npu", "--train_steps=8", "--iterations_per_loop=4", "--mode=train",
              "--precision_mode=allow_mix_precision", "--loss_scale_init=4096")
  assert not _calls(fake_bridge, "hccl_ops.allreduce") and not _calls(fake_bridge, "hccl_ops.broadcast")
  train, _, _ = read_log(d)
  # The stand-in does not repeat the step on a device as the real adapter does: each sess.run runs one step, and
  # the trainer counts the steps the graph really ran (the global step), not the loops it asked for.
  assert [r["step"] for r in train] == list(range(1, 9))
  assert all(r["loss_scale"] == 4096 for r in train)  # the scale logged is npu_bridge's manager's


def test_stand_in_distributed_optimizer_skips_the_allreduce_without_rank_size(fake_bridge, monkeypatch):
  # As npu_bridge's NPUDistributedOptimizer does: it reads RANK_SIZE itself, whatever the trainer was told.
  from npu_bridge.estimator.npu import npu_optimizer  # pylint: disable=g-import-not-at-top
  w = tf.Variable(1.0, use_resource=True)
  loss = w * 3.0
  monkeypatch.delenv("RANK_SIZE", raising=False)
  npu_optimizer.NPUDistributedOptimizer(tf.train.GradientDescentOptimizer(0.1)).compute_gradients(loss, [w])
  assert not _calls(fake_bridge, "hccl_ops.allreduce")
  monkeypatch.setenv("RANK_SIZE", "2")
  npu_optimizer.NPUDistributedOptimizer(tf.train.GradientDescentOptimizer(0.1)).compute_gradients(loss, [w])
  assert len(_calls(fake_bridge, "hccl_ops.allreduce")) == 1


_TWO = {"RANK_SIZE": "2", "RANK_ID": "0"}


@pytest.mark.parametrize("env, args, message", [
    ({}, ["--num_ranks=2"], "RANK_ID and RANK_SIZE"),
    (_TWO, [], "RANK_TABLE_FILE is not set"),
    (dict(_TWO, TABLE="2"), ["--num_ranks=4"], "--num_ranks=4 disagrees"),
    (dict(_TWO, RANK_SIZE="4", TABLE="2"), [], "lists rank_ids [0, 1], not 0..3"),
    (dict(_TWO, TABLE="2"), ["--distribute=collective"], "does not run on the NPU"),
])  # yapf: disable
def test_npu_ranks_must_agree_with_the_environment(fake_bridge, monkeypatch, tmp_path, env, args, message):
  for name in ("RANK_SIZE", "RANK_ID", "RANK_TABLE_FILE"):
    monkeypatch.delenv(name, raising=False)
  for name, value in env.items():
    if name == "TABLE":
      monkeypatch.setenv("RANK_TABLE_FILE", _rank_table(str(tmp_path / "t.json"), int(value)))
    else:
      monkeypatch.setenv(name, value)
  with pytest.raises(FlagError) as e:
    run_trainer(str(tmp_path / "run"), "--device=npu", "--train_steps=8", "--iterations_per_loop=4", *args)
  assert message in str(e.value) and "\n" not in str(e.value)
  assert not os.path.exists(str(tmp_path / "run" / "train.log"))  # refused before anything was written


def test_npu_step_counts_are_multiples_of_iterations_per_loop(fake_bridge, tmp_path):
  d = str(tmp_path)
  summary = run_trainer(d, "--device=npu", "--train_steps=10", "--iterations_per_loop=4", "--mode=train",
                        "--precision_mode=must_keep_origin_dtype")
  assert "plan: training steps 10 -> 12: on the NPU every sess.run runs --iterations_per_loop=4 steps" in \
      open(os.path.join(d, "train.log")).read()
  assert summary["steps"] == 12 and tf.train.latest_checkpoint(d).endswith("model.ckpt-12")
