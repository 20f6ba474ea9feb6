"""In-graph loss scaling: an overflowing step changes nothing but the scale; good steps grow it."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from tests import graph_helpers as gh


def _state(sess, parts):
  ls = parts["loss_scale"]
  return sess.run([ls.scale, ls.good_steps, ls.skipped, parts["global_step"]])


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_injected_inf_skips_the_update_and_halves_the_scale(optimizer):
  poison = tf.placeholder_with_default(tf.constant(1.0), [])
  loop, iterator, parts = gh.build(optimizer=optimizer, loss_scale="dynamic", initial_scale=1024.0, growth_steps=1000,
                                   poison=poison)
  with gh.session() as sess:
    sess.run([tf.global_variables_initializer(), iterator.initializer])
    sess.run(loop.fetches)  # one good step, so the slots are non-zero
    weights, slots = gh.model_weights(sess), gh.slot_values(sess, parts["optimizer"])
    powers = [sess.run(v) for v in tf.global_variables() if "power" in v.op.name]
    out = sess.run(loop.fetches, {poison: np.inf})
    assert out["skipped"] == 1
    after_weights, after_slots = gh.model_weights(sess), gh.slot_values(sess, parts["optimizer"])
    for name in weights:
      np.testing.assert_array_equal(weights[name], after_weights[name])
    for name in slots:
      np.testing.assert_array_equal(slots[name], after_slots[name])
    assert powers == [sess.run(v) for v in tf.global_variables() if "power" in v.op.name]
    scale, good, skipped, step = _state(sess, parts)
  assert scale == 512.0 and skipped == 1 and good == 0
  assert step == 2  # the global step counts batches consumed, skipped or not


def test_k_good_steps_double_the_scale_and_fixed_never_changes():
  loop, iterator, parts = gh.build(loss_scale="dynamic", initial_scale=8.0, growth_steps=3)
  with gh.session() as sess:
    sess.run([tf.global_variables_initializer(), iterator.initializer])
    scales = []
    for _ in range(7):
      sess.run(loop.fetches)
      scales.append(_state(sess, parts)[0])
  assert scales == [8.0, 8.0, 16.0, 16.0, 16.0, 32.0, 32.0]


def test_fixed_scale_skips_overflow_without_changing_the_scale():
  poison = tf.placeholder_with_default(tf.constant(1.0), [])
  loop, iterator, parts = gh.build(loss_scale="fixed", initial_scale=128.0, poison=poison)
  with gh.session() as sess:
    sess.run([tf.global_variables_initializer(), iterator.initializer])
    weights = gh.model_weights(sess)
    sess.run(loop.fetches, {poison: np.nan})
    after = gh.model_weights(sess)
    scale, _, skipped, _ = _state(sess, parts)
  assert scale == 128.0 and skipped == 1
  assert all(np.array_equal(weights[k], after[k]) for k in weights)


def test_scaled_gradients_equal_unscaled_ones():
  """With a power-of-two scale the update is the same as without scaling (the scale cancels exactly)."""
  results = []
  for mode in ("off", "fixed"):
    with tf.Graph().as_default():
      loop, iterator, parts = gh.build(loss_scale=mode, initial_scale=1024.0)
      with gh.session() as sess:
        sess.run([tf.global_variables_initializer(), iterator.initializer])
        for _ in range(3):
          sess.run(loop.fetches)
        results.append(gh.model_weights(sess))
  for name in results[0]:
    np.testing.assert_allclose(results[0][name], results[1][name], rtol=1e-5, atol=1e-6)
