"""launch.device: which compute dtype a precision mode means on each backend."""
import os
import re
import time

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from launch import device as device_lib


def _machine(monkeypatch, tf_major="2", kernels=True, cpu_flags=("avx512f", "avx512_bf16")):
  """Fakes everything the CPU decision may look at."""
  monkeypatch.setattr(device_lib, "_BF16", {})
  monkeypatch.setattr(device_lib, "_tf_major", lambda: tf_major)
  monkeypatch.setattr(device_lib, "_bfloat16_kernels_run", lambda: kernels)
  monkeypatch.setattr(device_lib, "cpu_flags", lambda: set(cpu_flags))


ALLOW_MODES = ("allow_mix_precision", "allow_fp32_to_fp16")


@pytest.mark.parametrize("tf_major", ["1", "2"])
def test_the_decision_times_nothing_so_noise_cannot_flip_it(monkeypatch, tf_major):
  # Issue 20: intel-tensorflow 1.15's bf16 and fp32 matmul probes tied and the run landed on a 3.8x slower step.
  # Any clock the decision read would be this one, which answers differently every time.
  _machine(monkeypatch, tf_major)
  clock = iter(np.random.RandomState(0).uniform(0, 1e3, 10000))
  monkeypatch.setattr(time, "time", lambda: next(clock))
  monkeypatch.setattr(time, "perf_counter", lambda: next(clock))
  verdicts = set()
  for _ in range(5):
    monkeypatch.setattr(device_lib, "_BF16", {})
    verdicts.add(tuple(device_lib.compute_dtype("cpu", mode) for mode in ALLOW_MODES))
  assert verdicts == {(tf.float32,) * 2 if tf_major == "1" else (tf.bfloat16,) * 2}


def test_tf1_computes_in_float32_even_with_native_bf16_and_says_why(monkeypatch, caplog):
  _machine(monkeypatch, "1", cpu_flags=("amx_bf16", "avx512_bf16"))
  monkeypatch.setattr(device_lib, "_bfloat16_kernels_run", lambda: pytest.fail("probed on TF 1.x"))
  with caplog.at_level("WARNING"):
    for mode in ALLOW_MODES:
      assert device_lib.compute_dtype("cpu", mode) == tf.float32
  # The run's first line says what was chosen and why, and how to force the other choice.
  assert "intel-tensorflow 1.15" in caplog.text and "computing in float32" in caplog.text
  assert "--precision_mode=force_fp16 forces bfloat16" in caplog.text


def test_tf2_with_native_bf16_computes_in_bfloat16(monkeypatch):
  for flag in ("avx512_bf16", "amx_bf16"):
    _machine(monkeypatch, "2", cpu_flags=("avx512f", flag))
    assert device_lib.compute_dtype("cpu", "allow_mix_precision") == tf.bfloat16
    usable, reason = device_lib.cpu_bfloat16_status()
    assert usable and flag in reason


def test_tf2_on_a_cpu_without_native_bf16_computes_in_float32(monkeypatch):
  _machine(monkeypatch, "2", cpu_flags=("avx512f", "avx2"))
  assert device_lib.compute_dtype("cpu", "allow_mix_precision") == tf.float32
  assert "no native bfloat16" in device_lib.cpu_bfloat16_status()[1]


def test_tf2_without_bf16_kernels_computes_in_float32(monkeypatch):
  _machine(monkeypatch, "2", kernels=False)
  assert device_lib.compute_dtype("cpu", "allow_mix_precision") == tf.float32
  assert "lacks" in device_lib.cpu_bfloat16_status()[1]


@pytest.mark.parametrize("tf_major", ["1", "2"])
def test_forced_modes_win_over_the_rule(monkeypatch, tf_major):
  _machine(monkeypatch, tf_major)
  for mode in ("must_keep_origin_dtype", "force_fp32"):
    assert device_lib.compute_dtype("cpu", mode) == tf.float32
  _machine(monkeypatch, tf_major, cpu_flags=())
  assert device_lib.compute_dtype("cpu", "force_fp16") == tf.bfloat16
  _machine(monkeypatch, tf_major, kernels=False)
  assert device_lib.compute_dtype("cpu", "force_fp16") == tf.float32  # a missing kernel would fail the run


def test_other_backends_ignore_the_cpu_rule(monkeypatch):
  _machine(monkeypatch, "2")
  assert device_lib.compute_dtype("gpu", "allow_mix_precision") == tf.float16
  assert device_lib.compute_dtype("npu", "allow_mix_precision") == tf.float32  # the adapter lowers precision


def test_the_performance_scripts_compute_in_float32_on_tf1(monkeypatch):
  # launch/train_performance_{1,8}p.sh run run_1p.sh with its default mode (run_8p.sh adds none of its own): on
  # TF 1.15 their short CPU runs take the float32 step's time (issue 20), on any CPU.
  root = os.path.join(os.path.dirname(__file__), os.pardir, "launch")
  with open(os.path.join(root, "run_1p.sh")) as f:
    default = re.search(r'^precision_mode="([a-z0-9_]+)"$', f.read(), re.M).group(1)
  with open(os.path.join(root, "run_8p.sh")) as f:
    assert "--precision_mode" not in f.read()
  for cpu_flags in ((), ("avx512_bf16",), ("amx_bf16", "avx512_bf16")):
    _machine(monkeypatch, "1", cpu_flags=cpu_flags)
    assert device_lib.compute_dtype("cpu", default) == tf.float32


def test_cpu_flags_reads_the_flags_line(tmp_path):
  cpuinfo = tmp_path / "cpuinfo"
  cpuinfo.write_text(u"processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx512f avx512_bf16\n\n"
                     u"processor\t: 1\nflags\t\t: fpu avx512f avx512_bf16\n")
  assert device_lib.cpu_flags(str(cpuinfo)) == {"fpu", "avx512f", "avx512_bf16"}
  assert device_lib.cpu_flags(str(tmp_path / "missing")) == set()


def test_the_real_decision_is_made_once_and_its_kernel_verdict_holds(monkeypatch):
  kernels = device_lib.bfloat16_kernels_run()
  status = device_lib.cpu_bfloat16_status()
  # Remembered: a second question must not probe again (the kernel probe costs a session).
  monkeypatch.setattr(device_lib, "_bfloat16_kernels_run", lambda: pytest.fail("probed twice"))
  monkeypatch.setattr(device_lib, "cpu_flags", lambda: pytest.fail("read twice"))
  assert device_lib.cpu_bfloat16_status() == status and device_lib.bfloat16_kernels_run() == kernels
  if tf.__version__.startswith("1."):
    assert status == (False, device_lib.TF1_BF16_REASON)
  # The verdict about kernels is true of this TensorFlow: a bf16 matmul + softmax and its gradient run iff the
  # probe says so (both stacks here have them: intel-tensorflow 1.15 and TF 2.x).
  graph = tf.Graph()
  with graph.as_default():
    w = tf.Variable(np.eye(3, dtype=np.float32))
    y = tf.nn.softmax(tf.matmul(tf.cast(tf.ones([2, 3]), tf.bfloat16), tf.cast(w, tf.bfloat16)))
    grad = tf.gradients(tf.reduce_sum(tf.cast(y, tf.float32)), w)[0]
    try:
      with tf.Session(graph=graph) as sess:
        sess.run(tf.global_variables_initializer())
        ran = np.all(np.isfinite(sess.run(grad)))
    except tf.errors.OpError:
      ran = False
  assert ran == kernels


def test_cpu_device_config_is_the_model_packages_fast_config_without_gpus():
  config = device_lib.device_config("cpu")
  assert config.inter_op_parallelism_threads == 1  # vit_raw.cpu_config.fast_cpu_config's choice
  assert config.device_count["GPU"] == 0
  assert config.allow_soft_placement
