"""The convolutional stem (--stem=conv): its variables, its tokens against NumPy, its locality, its FLOPs, the
places that must refuse it (official .npz layout, an ill-fitting patch size), and a run of it through the trainer
and the export tools."""
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from tests import numpy_vit
from tests import tool_helpers
from tests.train_helpers import run_trainer
from tools import exporters
from tools import model_source
from tools import runtimes
from vit_raw import checkpoint_mapping
from vit_raw import configs
from vit_raw import model
from vit_raw import parameters
from vit_raw.errors import ModelError

CONV = configs.get_config("tiny", hidden_size=16, num_layers=2, num_heads=2, mlp_dim=32, stem="conv")


def _tokens_graph(config, size, seed=0):
  """(session, images placeholder, tokens [B, N, D]) of the conv stem alone, its variables drawn at random."""
  images = tf.placeholder(tf.float32, [None, size, size, 3])
  with tf.variable_scope("vit"):
    stem = model._conv_stem  # pylint: disable=protected-access
    tokens, _, _ = stem(images, config, tf.float32, model.kernels_lib.PLAIN)
  sess = tf.Session()
  rs = np.random.RandomState(seed)
  values = {}
  for v in tf.global_variables():
    values[v.op.name[len("vit/"):]] = rs.normal(0.0, 0.5, v.shape.as_list()).astype(np.float32)
    v.load(values[v.op.name[len("vit/"):]], sess)
  return sess, images, tokens, values


def test_conv_stem_widths_double_up_to_the_hidden_size():
  assert configs.conv_stem_widths(configs.get_config("tiny", hidden_size=128, stem="conv")) == [64, 128]
  assert configs.conv_stem_widths(configs.get_config("ViT-B/16", stem="conv")) == [96, 192, 384, 768]
  assert configs.conv_stem_widths(configs.get_config("tiny", patch_size=2, stem="conv")) == [64]


def test_conv_stem_variables_match_the_analytic_shapes_and_count():
  images = tf.placeholder(tf.float32, [None, 16, 16, 3])
  logits = model.vit(images, CONV, 10, is_training=False)
  got = {v.op.name[len("vit/"):]: tuple(v.shape.as_list()) for v in tf.global_variables()}
  want = {k: tuple(s) for k, s in model.variable_shapes(CONV, 10, 16).items()}
  assert got == want
  assert "stem_1/kernel" in got and got["embedding/kernel"] == (1, 1, 16, 16)
  assert sum(int(np.prod(s)) for s in got.values()) == model.count_parameters(CONV, 10, 16)
  assert logits.shape.as_list() == [None, 10]


def test_conv_stem_tokens_equal_the_numpy_reference():
  sess, images, tokens, values = _tokens_graph(CONV, 16)
  x = np.random.RandomState(1).uniform(-1, 1, [2, 16, 16, 3]).astype(np.float32)
  got = sess.run(tokens, {images: x})
  want = numpy_vit.conv_stem_tokens(values, x)
  assert got.shape == (2, 16, 16) and np.abs(want).max() > 0.5
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_a_pixel_reaches_only_the_tokens_of_its_receptive_field():
  """Two 3x3 stride-2 convolutions see 7 pixels per axis: pixel row 5 lies under token rows 0 and 1 (4r..4r+6),
  pixel row 0 under token row 0 alone; a patch embedding would give each pixel exactly one token."""
  sess, images, tokens, _ = _tokens_graph(CONV, 16)
  x = np.random.RandomState(2).uniform(-1, 1, [1, 16, 16, 3]).astype(np.float32)
  base = sess.run(tokens, {images: x}).reshape(4, 4, -1)
  for (row, col), reached in (((5, 5), {(0, 0), (0, 1), (1, 0), (1, 1)}), ((0, 0), {(0, 0)}), ((8, 13), {(1, 2), (1, 3),
                                                                                                         (2, 2),
                                                                                                         (2, 3)})):
    moved = x.copy()
    moved[0, row, col] += 1.5
    changed = np.abs(sess.run(tokens, {images: moved}).reshape(4, 4, -1) - base).max(-1) > 1e-6
    assert {tuple(i) for i in np.argwhere(changed)} == reached, (row, col)


def test_forward_flops_count_the_convolutions():
  patch = configs.get_config("tiny", hidden_size=16, num_layers=2, num_heads=2, mlp_dim=32)
  # 16 px, patch 4: conv 3->8 at 8x8, conv 8->16 at 4x4, 1x1 16->16 at 4x4 (2 FLOPs a multiply-add), against the
  # 4x4x3 patch kernel at 4x4.
  conv_flops = 2 * (64 * 9 * 3 * 8 + 16 * 9 * 8 * 16 + 16 * 16 * 16)
  assert model.forward_flops(CONV, 16, 10) - model.forward_flops(patch, 16, 10) == conv_flops - 2 * 16 * 48 * 16


def test_the_stem_is_layer_zero_and_its_norms_do_not_decay():
  assert parameters.layer_id("vit/stem_1/kernel", 2) == 0
  assert parameters.exempt_from_weight_decay("stem_0/norm/scale", (8,))
  assert not parameters.exempt_from_weight_decay("stem_0/kernel", (3, 3, 3, 8))


@pytest.mark.parametrize("patch,hidden", [(6, 48), (1, 16), (8, 18)])
def test_a_patch_the_stem_cannot_make_is_one_line(patch, hidden):
  with pytest.raises(ModelError) as e:
    configs.get_config("tiny", patch_size=patch, hidden_size=hidden, num_heads=1, stem="conv")
  assert "\n" not in str(e.value) and "power of 2" in str(e.value) and "patch %d" % patch in str(e.value)


def test_an_unknown_stem_is_one_line():
  with pytest.raises(ModelError) as e:
    configs.get_config("tiny", stem="hybrid")
  assert "--stem=hybrid" in str(e.value) and "patch, conv" in str(e.value)


def test_the_official_layout_refuses_a_conv_stem_and_says_why(tmp_path):
  values = {name: np.zeros(shape, np.float32) for name, shape in model.variable_shapes(CONV, 10, 16).items()}
  with pytest.raises(ModelError) as e:
    checkpoint_mapping.save_official_npz(values, CONV, str(tmp_path / "out.npz"))
  assert "patch embedding only" in str(e.value) and not (tmp_path / "out.npz").exists()


def test_a_checkpoint_of_the_other_stem_is_diagnosed_as_such():
  patch = CONV._replace(stem="patch")
  conv_values = {n: np.zeros(s, np.float32) for n, s in model.variable_shapes(CONV, 10, 16).items()}
  patch_values = {n: np.zeros(s, np.float32) for n, s in model.variable_shapes(patch, 10, 16).items()}
  with pytest.raises(ModelError) as e:
    checkpoint_mapping.fit_to_model(conv_values, model.variable_shapes(patch, 10, 16), patch, 16)
  assert "convolutional stem" in str(e.value) and "--stem=conv" in str(e.value)
  with pytest.raises(ModelError) as e:
    checkpoint_mapping.fit_to_model(patch_values, model.variable_shapes(CONV, 10, 16), CONV, 16)
  assert "the patch embedding" in str(e.value) and "--stem=patch" in str(e.value)


def test_a_conv_stem_run_trains_and_its_run_folder_exports_it(tmp_path):
  run = str(tmp_path / "run")
  summary = run_trainer(run, "--stem=conv", "--train_steps=6", "--iterations_per_loop=3")
  assert summary["steps"] == 6 and np.isfinite(summary["final_loss"])
  source = model_source.from_run(run)
  assert source.config.stem == "conv" and "stem_1/kernel" in source.values
  images = tool_helpers.uint8_images(3)
  reference = runtimes.session_runner(source)
  expected = reference.logits(images)
  reference.close()
  # The frozen graph always; ONNX too where tf2onnx and onnxruntime are installed (make setup installs both).
  for fmt, name, rtol in (("pb", "vit.pb", 1e-5), ("onnx", "vit.onnx", 1e-4)):
    if fmt == "onnx" and not tool_helpers.has_onnx():
      continue
    out = str(tmp_path / name)
    exporters.export(source, fmt, out, batch_size=0, log=lambda *_: None)
    exported = runtimes.open_export(out)
    np.testing.assert_allclose(exported.logits(images), expected, rtol=0, atol=rtol * max(1.0, np.abs(expected).max()))
    exported.close()
  # The checkpoint alone needs the stem named next to the model; without it the error says which flag.
  shape = dict(patch_size=4, hidden_size=16, num_layers=1, num_heads=2, mlp_dim=32)
  assert model_source.from_checkpoint(source.checkpoint, "tiny", shape=dict(shape, stem="conv")).config.stem == "conv"
  with pytest.raises(model_source.UsageError) as e:
    model_source.from_checkpoint(source.checkpoint, "tiny", shape=shape)
  assert "convolutional stem" in str(e.value) and "--stem=conv" in str(e.value)
  done = tool_helpers.run_tool("tools.export", "--model_dir", run, "--format", "npz", "--out", str(tmp_path / "x.npz"))
  tool_helpers.assert_usage_error(done, "patch embedding only", "conv stem")
  assert not os.path.exists(str(tmp_path / "x.npz"))
