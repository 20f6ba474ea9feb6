"""launch.device: which compute dtype a precision mode means on each backend."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from launch import device as device_lib


def _probe(monkeypatch, kernels, bf16_seconds, fp32_seconds):
  monkeypatch.setattr(device_lib, "_BF16", {})
  monkeypatch.setattr(device_lib, "_bfloat16_kernels_run", lambda: kernels)
  monkeypatch.setattr(device_lib, "_matmul_seconds", lambda dtype: bf16_seconds
                      if dtype == tf.bfloat16 else fp32_seconds)


def test_cpu_uses_bfloat16_only_where_it_is_fast(monkeypatch):
  _probe(monkeypatch, kernels=True, bf16_seconds=0.5, fp32_seconds=1.0)
  assert device_lib.compute_dtype("cpu", "allow_mix_precision") == tf.bfloat16
  _probe(monkeypatch, kernels=True, bf16_seconds=6.0, fp32_seconds=1.0)  # intel-tensorflow 1.15 behaves so
  assert device_lib.compute_dtype("cpu", "allow_mix_precision") == tf.float32
  usable, reason = device_lib.cpu_bfloat16_status()
  assert not usable and "6.0x slower" in reason
  _probe(monkeypatch, kernels=False, bf16_seconds=0.5, fp32_seconds=1.0)
  assert device_lib.compute_dtype("cpu", "force_fp16") == tf.float32
  assert "lacks" in device_lib.cpu_bfloat16_status()[1]


def test_float32_modes_and_other_backends(monkeypatch):
  _probe(monkeypatch, kernels=True, bf16_seconds=0.5, fp32_seconds=1.0)
  for mode in ("must_keep_origin_dtype", "force_fp32"):
    assert device_lib.compute_dtype("cpu", mode) == tf.float32
  assert device_lib.compute_dtype("gpu", "allow_mix_precision") == tf.float16
  assert device_lib.compute_dtype("npu", "allow_mix_precision") == tf.float32  # the adapter lowers precision


def test_the_real_probe_runs_once_and_its_kernel_verdict_holds(monkeypatch):
  usable, reason = device_lib.cpu_bfloat16_status()
  # Remembered: a second question must not probe again (a probe costs two sessions).
  monkeypatch.setattr(device_lib, "_bfloat16_kernels_run", lambda: pytest.fail("probed twice"))
  monkeypatch.setattr(device_lib, "_matmul_seconds", lambda dtype: pytest.fail("timed twice"))
  assert device_lib.cpu_bfloat16_status() == (usable, reason)
  # The verdict about kernels is true of this TensorFlow: a bf16 matmul + softmax and its gradient run iff the
  # probe did not say they are missing (both stacks here have them: intel-tensorflow 1.15 and TF 2.x).
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
  assert ran == ("lacks" not in reason)


def test_cpu_device_config_is_the_model_packages_fast_config_without_gpus():
  config = device_lib.device_config("cpu")
  assert config.inter_op_parallelism_threads == 1  # vit_raw.cpu_config.fast_cpu_config's choice
  assert config.device_count["GPU"] == 0
  assert config.allow_soft_placement
