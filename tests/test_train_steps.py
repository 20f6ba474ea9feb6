"""A few training steps for every optimizer, schedule and precision; the schedules' shapes; the N-step loop."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from launch import device as device_lib
from launch import schedules
from tests import graph_helpers as gh


def _train(steps, **kwargs):
  loop, iterator, parts = gh.build(**kwargs)
  with gh.session() as sess:
    sess.run([tf.global_variables_initializer(), iterator.initializer])
    before = gh.model_weights(sess)
    losses = [sess.run(loop.fetches)["last_loss"] for _ in range(steps)]
    after = gh.model_weights(sess)
    step = sess.run(parts["global_step"])
  return losses, before, after, step


@pytest.mark.parametrize("optimizer,schedule", [("momentum", "cosine"), ("sgd", "linear"), ("adam", "exponential"),
                                                ("adamw", "cosine")])
def test_every_optimizer_and_schedule_trains(optimizer, schedule):
  losses, before, after, step = _train(8, optimizer=optimizer, schedule=schedule,
                                       lr=0.02 if "adam" in optimizer else 0.1, weight_decay=0.01)
  assert step == 8
  assert all(np.isfinite(losses))
  assert any(not np.array_equal(before[k], after[k]) for k in before)
  # The fake data is 2 batches repeated, so steps 7-8 see the batches of steps 1-2 again: their loss must be lower.
  assert np.mean(losses[-2:]) < np.mean(losses[:2])


def test_schedules_follow_their_formulas():
  step = tf.placeholder(tf.int64, [])
  lrs = {
      name: schedules.learning_rate(step, 1.0, 12, name, warmup_steps=2, decay_value=None, decay_steps=3)
      for name in ("cosine", "linear", "exponential")
  }
  with gh.session() as sess:
    got = {name: [sess.run(t, {step: s}) for s in range(13)] for name, t in lrs.items()}
  for name in got:
    assert got[name][0] == pytest.approx(0.5) and got[name][1] == pytest.approx(1.0)  # linear warm-up
  assert got["cosine"][7] == pytest.approx(0.5, abs=1e-6)  # half-way through the decay
  assert got["cosine"][12] == pytest.approx(0.0, abs=1e-6)
  assert got["linear"][7] == pytest.approx(0.5, abs=1e-6)
  assert got["exponential"][4] == pytest.approx(1.0) and got["exponential"][5] == pytest.approx(0.1)
  assert got["exponential"][11] == pytest.approx(0.001)


@pytest.mark.parametrize("optimizer", ["adam"])
def test_n_step_loop_equals_n_single_steps(optimizer):
  results = {}
  for n in (1, 4):
    with tf.Graph().as_default():
      loop, iterator, parts = gh.build(iterations=n, optimizer=optimizer, lr=0.05)
      with gh.session() as sess:
        sess.run([tf.global_variables_initializer(), iterator.initializer])
        losses = []
        for _ in range(8 // n):
          out = sess.run(loop.fetches)
          losses.append(out["last_loss"])
        results[n] = (losses, gh.model_weights(sess), gh.slot_values(sess, parts["optimizer"]), out["global_step"])
  single, looped = results[1], results[4]
  assert single[3] == looped[3] == 8
  np.testing.assert_allclose([single[0][3], single[0][7]], looped[0], rtol=1e-4, atol=1e-5)
  for name in single[1]:
    np.testing.assert_allclose(single[1][name], looped[1][name], rtol=1e-4, atol=1e-5)
  assert set(single[2]) == set(looped[2]) and single[2]
  for name in single[2]:
    np.testing.assert_allclose(single[2][name], looped[2][name], rtol=1e-4, atol=1e-5)


def test_partial_loop_runs_the_fed_number_of_steps():
  loop, iterator, parts = gh.build(iterations=4)
  with gh.session() as sess:
    sess.run([tf.global_variables_initializer(), iterator.initializer])
    sess.run(loop.fetches, {loop.iterations: 3})
    assert sess.run(parts["global_step"]) == 3


def test_variables_and_slots_live_outside_the_loop():
  gh.build(iterations=4, optimizer="adam")
  for v in tf.global_variables():
    # An initializer inside a while loop could not run before the loop: every one must be outside control flow.
    assert v.initializer._control_flow_context is None, v.name  # pylint: disable=protected-access


@pytest.mark.parametrize("bf16_fast", [True, False])
def test_precision_modes_map_and_train_on_cpu(monkeypatch, bf16_fast):
  # The probe's verdict is set here, so the expectation does not come from the probe under test.
  monkeypatch.setattr(device_lib, "_BF16", {"status": (bf16_fast, "set by the test")})
  reduced = tf.bfloat16 if bf16_fast else tf.float32
  for mode in ("allow_mix_precision", "allow_fp32_to_fp16"):
    assert device_lib.compute_dtype("cpu", mode) == reduced
  assert device_lib.compute_dtype("cpu", "force_fp16") == tf.bfloat16  # forced (both stacks have the kernels)
  for mode in ("must_keep_origin_dtype", "force_fp32"):
    assert device_lib.compute_dtype("cpu", mode) == tf.float32
  losses, before, after, step = _train(3, compute_dtype=reduced)
  assert step == 3 and all(np.isfinite(losses))
  assert any(not np.array_equal(before[k], after[k]) for k in before)


def test_precision_modes_map_to_float16_on_gpu_and_float32_on_npu():
  assert device_lib.compute_dtype("gpu", "allow_mix_precision") == tf.float16
  assert device_lib.compute_dtype("gpu", "force_fp32") == tf.float32
  assert device_lib.compute_dtype("npu", "force_fp16") == tf.float32  # the adapter lowers precision itself
  assert device_lib.resolve_precision("cpu", "auto") == "must_keep_origin_dtype"
  assert device_lib.resolve_precision("gpu", "auto") == "allow_mix_precision"


def test_float16_with_dynamic_loss_scale_trains():
  losses, before, after, step = _train(4, compute_dtype=tf.float16, loss_scale="dynamic")
  assert step == 4 and all(np.isfinite(losses))
  assert any(not np.array_equal(before[k], after[k]) for k in before)
