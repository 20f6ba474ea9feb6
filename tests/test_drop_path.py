"""Stochastic depth in vit_raw.model: off means the same graph, the per-block rates are DeiT's linear schedule, the
masks are per example at the block's rate, and they are a function of rng_seed alone."""
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from vit_raw import configs
from vit_raw import kernels
from vit_raw import model

TINY = configs.get_config("tiny", hidden_size=16, num_layers=3, num_heads=2, mlp_dim=32)


def _images(n, seed=0):
  return tf.constant(np.random.RandomState(seed).uniform(-1, 1, [n, 8, 8, 3]).astype(np.float32))


def _graph_def(**kwargs):
  with tf.Graph().as_default() as graph:
    model.vit(_images(2), TINY, 5, **kwargs)
    return graph.as_graph_def()  # compared as messages: their serialisation orders attribute maps at random


def _keep_scales(graph, block):
  """The per-example scales (0 or 1 / keep) of block `block`'s attention and MLP branches."""
  return [
      graph.get_tensor_by_name("vit/encoderblock_%d/%s/keep_scale:0" % (block, name))
      for name in ("drop_path", "drop_path_1")
  ]


def _random_head(sess):
  head = [v for v in tf.global_variables() if v.op.name == "vit/head/kernel"][0]
  sess.run(head.assign(tf.random_normal(head.shape, seed=1)))


def test_rates_grow_linearly_from_zero_to_the_rate_in_the_last_block():
  assert model.drop_path_rates(0.1, 12)[0] == 0.0 and model.drop_path_rates(0.1, 12)[-1] == pytest.approx(0.1)
  np.testing.assert_allclose(model.drop_path_rates(0.3, 4), [0.0, 0.1, 0.2, 0.3])
  assert model.drop_path_rates(0.5, 1) == [0.0]


def test_off_builds_the_same_graph():
  seed = np.array([1, 2], np.int64)  # not a tensor: only drop path could add it to the graph
  assert _graph_def(is_training=True) == _graph_def(is_training=True, drop_path_rate=0.0, rng_seed=seed)
  assert _graph_def(is_training=False) == _graph_def(is_training=False, drop_path_rate=0.3, rng_seed=seed)


def test_evaluation_ignores_drop_path():
  images = _images(4)
  training = tf.placeholder_with_default(True, [])
  reference = model.vit(images, TINY, 5, is_training=False)
  with_rate = model.vit(images, TINY, 5, is_training=False, drop_path_rate=0.5, rng_seed=[1, 2])
  switched = model.vit(images, TINY, 5, is_training=training, drop_path_rate=0.5, rng_seed=tf.constant([1, 2]))
  with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    _random_head(sess)
    expected = sess.run(reference)
    assert np.abs(expected).max() > 0.1
    np.testing.assert_array_equal(sess.run(with_rate), expected)
    # The residual adds behind tf.cond's switches fuse differently on TF 2's oneDNN: equal up to rounding there.
    np.testing.assert_allclose(sess.run(switched, {training: False}), expected, rtol=1e-5, atol=1e-5)
    assert not np.array_equal(sess.run(switched, {training: True}), expected)


def test_each_block_drops_whole_examples_at_its_rate():
  n, rate = 4000, 0.6
  model.vit(_images(n), TINY, 5, is_training=True, drop_path_rate=rate, rng_seed=tf.constant([5, 6], tf.int64))
  graph = tf.get_default_graph()
  assert not [op.name for op in graph.get_operations() if op.name.startswith("vit/encoderblock_0/drop_path")]
  with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    scales = sess.run({block: _keep_scales(graph, block) for block in (1, 2)})
  for block, block_rate in ((1, 0.3), (2, rate)):  # rate * i / (L - 1)
    for scale in scales[block]:
      assert scale.shape == (n,)
      np.testing.assert_allclose(np.unique(scale), [0.0, 1.0 / (1.0 - block_rate)], rtol=1e-6)
      dropped = np.mean(scale == 0)
      assert abs(dropped - block_rate) < 4.5 * np.sqrt(block_rate * (1 - block_rate) / n), (block, dropped)
  # Every block and branch has its own seed.
  assert not np.array_equal(scales[1][0], scales[1][1]) and not np.array_equal(scales[2][0], scales[2][1])
  assert not np.array_equal(scales[1][0] == 0, scales[2][0] == 0)


def test_kernel_drops_whole_examples_and_keeps_the_mean():
  x = tf.ones([20000, 3, 4])
  out = tf.Session().run(kernels.drop_path(x, 0.25, tf.constant([0, 1])))
  per_example = out.reshape(20000, -1)
  assert np.all(per_example.min(1) == per_example.max(1))  # one decision per example
  assert set(np.unique(per_example)) == {0.0, np.float32(1 / 0.75)}
  assert abs(out.mean() - 1.0) < 0.02


def test_the_same_seed_draws_the_same_masks_in_any_session_another_seed_differs():
  images = _images(8)
  seed = tf.placeholder(tf.int64, [2])
  logits = model.vit(images, TINY, 5, is_training=True, drop_path_rate=0.5, rng_seed=seed)
  grads = tf.gradients(tf.reduce_sum(logits), tf.trainable_variables())
  assert all(g is not None for g in grads)
  with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    _random_head(sess)
    first = sess.run(logits, {seed: [3, 7]})
    np.testing.assert_array_equal(sess.run(logits, {seed: [3, 7]}), first)
    assert not np.array_equal(sess.run(logits, {seed: [3, 8]}), first)
    masks = sess.run(_keep_scales(tf.get_default_graph(), 2), {seed: [3, 7]})
  with tf.Graph().as_default() as graph:  # a new process after a resume: only the seed matters
    model.vit(_images(8, seed=1), TINY, 5, is_training=True, drop_path_rate=0.5, rng_seed=tf.constant([3, 7], tf.int64))
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      again = sess.run(_keep_scales(graph, 2))
  for a, b in zip(masks, again):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kwargs,message", [({
    "drop_path_rate": 1.0
}, "in \\[0, 1\\)"), ({
    "drop_path_rate": -0.1
}, "in \\[0, 1\\)"), ({
    "drop_path_rate": 0.1
}, "needs rng_seed"), ({
    "drop_path_rate": 0.1,
    "rng_seed": np.array([1.0, 2.0], np.float32)
}, "int32/int64")])
def test_bad_settings_are_one_clear_line(kwargs, message):
  with pytest.raises(ValueError, match=message):
    model.vit(_images(2), TINY, 5, is_training=True, **kwargs)
