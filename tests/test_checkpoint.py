"""vit_raw.checkpoint: official .npz in both namings and our TF checkpoints loaded into a graph, posemb resize,
transfer, clear errors (the NumPy-only mapping alone: tests/test_checkpoint_mapping.py)."""
import os
import tempfile

import numpy as np
import pytest
import scipy.ndimage
import tensorflow.compat.v1 as tf

from tests import numpy_vit
from vit_raw import checkpoint
from vit_raw import configs
from vit_raw import model

TINY = configs.get_config("tiny", hidden_size=16, num_layers=2, num_heads=2, mlp_dim=32)
POSEMB = "Transformer/posembed_input/pos_embedding"


def _write_npz(params, name="vit.npz"):
  path = os.path.join(tempfile.mkdtemp(), name)
  np.savez(path, **params)
  return path


def _build(num_classes=5, image_size=(8, 8), representation=None, config=TINY):
  x = tf.placeholder(tf.float32, [None, image_size[0], image_size[1], 3])
  return x, model.vit(x, config, num_classes, is_training=False, representation_size=representation)


def _load(path, num_classes=5, image_size=(8, 8), representation=None, keep_pre_logits=False):
  x, y = _build(num_classes, image_size, representation)
  initializer = checkpoint.init_from_checkpoint(path, TINY, num_classes, image_size, keep_pre_logits=keep_pre_logits)
  sess = tf.Session()
  sess.run(tf.global_variables_initializer())
  initializer.init_fn(sess)
  return sess, initializer, x, y


def test_original_naming_load_save_load_is_exact():
  params = numpy_vit.random_official_params(16, 2, 2, 32, 4, 5, 5, representation=6)
  sess, initializer, _, _ = _load(_write_npz(params), representation=6, keep_pre_logits=True)
  assert initializer.missing == [] and initializer.unused == []
  out = os.path.join(tempfile.mkdtemp(), "out.npz")
  checkpoint.export_npz(sess, TINY, out)
  with np.load(out, allow_pickle=False) as saved:
    assert sorted(saved.files) == sorted(params)
    for key in params:
      np.testing.assert_array_equal(saved[key], params[key], err_msg=key)


def test_big_vision_naming_gives_the_same_model_as_original_naming():
  params = numpy_vit.random_official_params(16, 2, 2, 32, 4, 5, 5, seed=1)
  params[POSEMB][:, 0] = 0.0  # big_vision has no posemb row for the class token
  big_vision = numpy_vit.to_big_vision(params)
  big_vision["opt/state/mu/head/kernel"] = np.zeros([16, 5], np.float32)
  assert "params/Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel" in big_vision
  sess, initializer, x, y = _load(_write_npz(big_vision))
  assert initializer.missing == [] and initializer.unused == ["[big_vision] opt/state/mu/head/kernel"]
  images = np.random.RandomState(0).uniform(-1, 1, [2, 8, 8, 3]).astype(np.float32)
  expected = numpy_vit.forward(params, images, patch=4, num_heads=2)
  np.testing.assert_allclose(sess.run(y, {x: images}), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
  out = os.path.join(tempfile.mkdtemp(), "out.npz")
  checkpoint.export_npz(sess, TINY, out)
  with np.load(out) as saved:  # written back in the original layout
    assert sorted(saved.files) == sorted(params)
    for key in params:
      np.testing.assert_array_equal(saved[key], params[key], err_msg=key)


def test_loading_at_another_image_size_resizes_the_position_embedding():
  params = numpy_vit.random_official_params(16, 2, 2, 32, 4, 1 + 2 * 2, 5, seed=3)  # trained at 8x8: 2x2 grid
  sess, initializer, _, _ = _load(_write_npz(params), image_size=(12, 16))  # now a 3x4 grid
  pos = checkpoint.model_values(sess)["pos_embedding"]
  grid = scipy.ndimage.zoom(params[POSEMB][0, 1:].reshape(2, 2, 16), (3 / 2.0, 4 / 2.0, 1), order=1)
  np.testing.assert_array_equal(pos[0, 0], params[POSEMB][0, 0])
  np.testing.assert_allclose(pos[0, 1:], grid.reshape(12, 16), rtol=1e-6)
  assert initializer.missing == []
  assert "position embeddings resized (2x2 -> 3x4 grid)" in initializer.report


def test_new_class_count_drops_head_and_pre_logits_and_lists_them_in_one_line():
  params = numpy_vit.random_official_params(16, 2, 2, 32, 4, 5, 21, representation=16, seed=4)
  x, _ = _build(num_classes=3, representation=16)
  variables = {v.op.name: v for v in tf.global_variables()}
  initializer = checkpoint.init_from_checkpoint(_write_npz(params), TINY, 3, 8)
  with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    sess.run(tf.assign(variables["vit/head/kernel"], tf.ones([16, 3])))  # must be re-zeroed
    initializer.init_fn(sess)
    values = checkpoint.model_values(sess)
  assert initializer.unused == ["head/bias", "head/kernel", "pre_logits/bias", "pre_logits/kernel"]
  assert initializer.missing == ["head/bias", "head/kernel", "pre_logits/bias", "pre_logits/kernel"]
  assert "\n" not in initializer.message
  assert "head re-initialised to zeros (21 -> 3 classes)" in initializer.report
  assert any(
      line.startswith("model tensors not in the checkpoint") and "pre_logits/kernel" in line
      for line in initializer.report)
  assert not any("position embeddings resized" in line for line in initializer.report)  # same 8x8 / patch 4 grid
  assert np.all(values["head/kernel"] == 0) and np.all(values["head/bias"] == 0)
  assert not np.allclose(values["pre_logits/kernel"], params["pre_logits/kernel"])
  np.testing.assert_array_equal(values["cls"], params["cls"])


def test_keep_pre_logits_keeps_the_representation_layer():
  params = numpy_vit.random_official_params(16, 2, 2, 32, 4, 5, 21, representation=16, seed=4)
  sess, initializer, _, _ = _load(_write_npz(params), num_classes=3, representation=16, keep_pre_logits=True)
  np.testing.assert_array_equal(checkpoint.model_values(sess)["pre_logits/kernel"], params["pre_logits/kernel"])
  assert initializer.missing == ["head/bias", "head/kernel"]


def test_missing_key_is_listed_and_keeps_its_initial_value():
  params = numpy_vit.random_official_params(16, 2, 2, 32, 4, 5, 5, seed=5)
  del params["Transformer/encoder_norm/scale"]
  params["extra/thing"] = np.zeros(3, np.float32)
  sess, initializer, _, _ = _load(_write_npz(params))
  assert initializer.missing == ["encoder_norm/scale"] and initializer.unused == ["extra/thing"]
  np.testing.assert_array_equal(checkpoint.model_values(sess)["encoder_norm/scale"], np.ones(16))


def test_checkpoint_of_another_hidden_size_names_key_shapes_and_cause():
  params = numpy_vit.random_official_params(24, 2, 2, 32, 4, 5, 5)
  _build()
  with pytest.raises(ValueError) as e:
    checkpoint.init_from_checkpoint(_write_npz(params), TINY, 5, 8)
  message = str(e.value)
  assert "\n" not in message
  assert "MultiHeadDotProductAttention_1/query/kernel" in message
  assert "(24, 2, 12)" in message and "(16, 2, 8)" in message and "hidden 24" in message


def test_other_patch_size_fails_naming_key_and_both_shapes():
  params = numpy_vit.random_official_params(16, 2, 2, 32, 2, 17, 5)  # patch 2 instead of 4
  _build()
  with pytest.raises(ValueError) as e:
    checkpoint.init_from_checkpoint(_write_npz(params), TINY, 5, 8)
  assert "embedding/kernel" in str(e.value) and "(2, 2, 3, 16)" in str(e.value) and "(4, 4, 3, 16)" in str(e.value)
  assert "patch size 2" in str(e.value)


def test_other_depth_fails_with_block_counts():
  params = numpy_vit.random_official_params(16, 3, 2, 32, 4, 5, 5)
  _build()
  with pytest.raises(ValueError, match="3 encoder blocks, model tiny has 2"):
    checkpoint.init_from_checkpoint(_write_npz(params), TINY, 5, 8)


@pytest.mark.parametrize("content", [b"not a checkpoint at all", b"PK\x03\x04 broken zip", None])
def test_invalid_files_give_one_clear_line(content):
  path = os.path.join(tempfile.mkdtemp(), "weights.npz")
  if content is not None:
    with open(path, "wb") as f:
      f.write(content)
  else:  # an .npz whose array needs pickle: refused, never unpickled
    np.savez(path, **{"embedding/kernel": np.array([{"a": 1}], dtype=object)})
  _build()
  with pytest.raises(ValueError) as e:
    checkpoint.init_from_checkpoint(path, TINY, 5, 8)
  assert path in str(e.value) and "\n" not in str(e.value)


def test_nonexistent_path_is_a_clear_error():
  _build()
  with pytest.raises(ValueError, match="does not exist"):
    checkpoint.init_from_checkpoint("/nonexistent/vit.npz", TINY, 5, 8)


def test_a_tf_checkpoint_cut_short_is_one_line_naming_it():
  directory = tempfile.mkdtemp()
  with tf.Graph().as_default():
    _build()
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      prefix = tf.train.Saver().save(sess, os.path.join(directory, "model.ckpt"), global_step=1)
  data = prefix + ".data-00000-of-00001"
  with open(data, "r+b") as f:  # the index is intact, the data file lost its second half (a copy cut short)
    f.truncate(os.path.getsize(data) // 2)
  with pytest.raises(ValueError) as e:
    checkpoint.read_checkpoint(prefix, TINY)
  assert str(e.value).startswith("TensorFlow checkpoint %s cannot be read: tensor vit/" % prefix)
  assert "\n" not in str(e.value)


def test_our_tf_checkpoint_loads_exactly_and_ignores_optimizer_slots():
  directory = tempfile.mkdtemp()
  with tf.Graph().as_default():
    x, y = _build()
    loss = tf.reduce_sum(y)
    step = tf.train.AdamOptimizer(0.1).minimize(loss)
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      sess.run(tf.assign(tf.global_variables("vit/head/kernel")[0], tf.ones([16, 5])))
      sess.run(step, {x: np.ones([1, 8, 8, 3], np.float32)})
      expected = checkpoint.model_values(sess)
      tf.train.Saver().save(sess, os.path.join(directory, "model.ckpt"), global_step=1)
  sess, initializer, _, _ = _load(directory)
  assert initializer.missing == [] and initializer.unused == []
  got = checkpoint.model_values(sess)
  assert sorted(got) == sorted(expected)
  for key in expected:
    np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
  # And the same weights exported to the official layout load back exactly.
  out = os.path.join(tempfile.mkdtemp(), "from_tf.npz")
  checkpoint.export_npz(sess, TINY, out)
  with tf.Graph().as_default():
    sess2, _, _, _ = _load(out)
    again = checkpoint.model_values(sess2)
  for key in expected:
    np.testing.assert_array_equal(again[key], expected[key], err_msg=key)
