"""Shared test set-up: quiet TensorFlow, graph mode on both stacks, a fresh graph per test."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# intel-tensorflow 1.15's oneDNN graph rewrite costs seconds on the first run of every new graph, which dominates
# these millisecond-sized tests; it is read once per process, so it is set here for the whole suite.
# tests/test_model.py re-checks the model against the NumPy reference with oneDNN on, in a fresh process.
os.environ.setdefault("TF_DISABLE_MKL", "1")

import sys  # noqa: E402

import pytest  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402

tf.disable_v2_behavior()
tf.logging.set_verbosity(tf.logging.ERROR)


@pytest.fixture(autouse=True)
def _fresh_graph():
  """Every test builds its own default graph, so variable names never collide across tests."""
  with tf.Graph().as_default():
    yield


@pytest.fixture
def fake_bridge(monkeypatch):
  """tests/fake_npu_bridge, a STAND-IN for Ascend's npu_bridge written for these tests (not Ascend's code), made
  importable for one test with its record of calls emptied; launch.npu forgets any earlier import attempt."""
  from launch import npu  # pylint: disable=g-import-not-at-top
  monkeypatch.syspath_prepend(os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_npu_bridge"))
  monkeypatch.setattr(npu, "_STATE", {})
  for name in [m for m in sys.modules if m.startswith("npu_bridge")]:
    monkeypatch.delitem(sys.modules, name)
  import npu_bridge  # pylint: disable=g-import-not-at-top
  del npu_bridge.CALLS[:]
  yield npu_bridge
  for name in [m for m in sys.modules if m.startswith("npu_bridge")]:
    del sys.modules[name]
