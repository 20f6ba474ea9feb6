"""The NPU wiring of launch/npu.py and the trainer, checked against tests/fake_npu_bridge.

tests/fake_npu_bridge is a STAND-IN written for these tests, not Ascend's npu_bridge: it records the calls and
passes everything through, so on this CPU machine it shows which adapter calls the trainer makes with which values;
it cannot show that the Ascend adapter accepts them.
"""
import os
import sys

import pytest
import tensorflow.compat.v1 as tf
from tensorflow.core.protobuf.rewriter_config_pb2 import RewriterConfig

from launch import npu
from tests.train_helpers import read_log, run_trainer

FAKE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_npu_bridge")


@pytest.fixture
def fake_bridge(monkeypatch):
  monkeypatch.syspath_prepend(FAKE)
  monkeypatch.setattr(npu, "_STATE", {})
  for name in [m for m in sys.modules if m.startswith("npu_bridge")]:
    monkeypatch.delitem(sys.modules, name)
  import npu_bridge  # pylint: disable=g-import-not-at-top
  del npu_bridge.CALLS[:]
  yield npu_bridge
  for name in [m for m in sys.modules if m.startswith("npu_bridge")]:
    del sys.modules[name]


def _calls(bridge, name):
  return [args for called, args in bridge.CALLS if called == name]


def test_without_npu_bridge_the_npu_is_not_available(monkeypatch):
  monkeypatch.setattr(npu, "_STATE", {})
  assert not npu.available() and "npu_bridge" in npu.import_error()


def test_session_config_sets_the_adapter_options(fake_bridge):
  assert npu.available()
  config = npu.session_config(tf.ConfigProto(), "allow_mix_precision", 100, over_dump=True, over_dump_path="/o",
                              data_dump=True, data_dump_path="/d", data_dump_steps=[0, 5], profiling=True,
                              profiling_options=npu.default_profiling_options("/p"), fusion_switch_file="/f.json")
  (op,) = config.graph_options.rewrite_options.custom_optimizers
  p = op.parameter_map
  assert op.name == "NpuOptimizer"
  assert p["use_off_line"].b and p["enable_data_pre_proc"].b and not p["mix_compile_mode"].b
  assert p["precision_mode"].s == b"allow_mix_precision" and p["iterations_per_loop"].i == 100
  assert p["enable_dump_debug"].b and p["dump_debug_mode"].s == b"all"
  assert p["enable_dump"].b and p["dump_path"].s == b"/d" and p["dump_step"].s == b"0|5"
  assert p["profiling_mode"].b and b'"training_trace": "on"' in p["profiling_options"].s
  assert p["fusion_switch_file"].s == b"/f.json"
  assert config.graph_options.rewrite_options.remapping == RewriterConfig.OFF
  assert config.graph_options.rewrite_options.memory_optimization == RewriterConfig.OFF


def test_loss_scale_managers(fake_bridge):
  opt = tf.train.GradientDescentOptimizer(0.1)
  npu.loss_scale_optimizer(opt, "dynamic", 65536.0, 1000)
  npu.loss_scale_optimizer(opt, "fixed", 1024.0, 1000)
  (dynamic,) = _calls(fake_bridge, "ExponentialUpdateLossScaleManager")
  assert dynamic["init_loss_scale"] == 65536.0 and dynamic["incr_every_n_steps"] == 1000
  assert dynamic["decr_every_n_nan_or_inf"] == 1 and dynamic["decr_ratio"] == 0.5
  assert _calls(fake_bridge, "FixedLossScaleManager") == [{"loss_scale": 1024.0}]
  assert all(c["opt"] is opt for c in _calls(fake_bridge, "NPULossScaleOptimizer"))


def test_trainer_on_npu_wires_loop_loss_scale_and_distribution(fake_bridge, tmp_path):
  d = str(tmp_path)
  run_trainer(d, "--device=npu", "--train_steps=8", "--iterations_per_loop=4", "--mode=train",
              "--precision_mode=allow_mix_precision", "--num_ranks=2", "--rank=1", "--loss_scale_init=4096")
  (loop_call,) = _calls(fake_bridge, "set_iteration_per_loop")
  assert loop_call["iterations_per_loop"] == 4
  assert loop_call["train_op"].type == "NoOp"
  # Mixed precision on the NPU means float16 inside: dynamic loss scaling by npu_bridge's optimizer, wrapping the
  # all-reduce wrapper, wrapping our momentum optimizer.
  (ls_call,) = _calls(fake_bridge, "NPULossScaleOptimizer")
  assert ls_call["is_distributed"] is True
  assert type(ls_call["opt"]).__name__ == "NPUDistributedOptimizer"
  assert isinstance(_calls(fake_bridge, "NPUDistributedOptimizer")[0]["optimizer"], tf.train.MomentumOptimizer)
  assert _calls(fake_bridge, "NPULossScaleOptimizer.compute_gradients")
  train, _, _ = read_log(d)
  # The stand-in does not repeat the step, so only the trainer's own step count is checked here.
  assert [r["step"] for r in train] == [4, 8]
  assert all(r["loss_scale"] == 4096 for r in train)  # the scale logged is npu_bridge's manager's
