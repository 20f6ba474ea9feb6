"""vit_raw.checkpoint_mapping without TensorFlow: the official names both ways, posemb resize, fitting a checkpoint
to a model's shapes (depth, head, grid checked there once), diagnoses."""
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.ndimage

from tests import numpy_vit
from vit_raw import checkpoint_mapping
from vit_raw import configs
from vit_raw import parameters

TINY = configs.get_config("tiny", hidden_size=16, num_layers=2, num_heads=2, mlp_dim=32)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_mapping_and_parameters_import_without_tensorflow():
  code = ("import sys; from vit_raw import checkpoint_mapping, parameters; "
          "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tensorflow_core')))")
  done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        universal_newlines=True)
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.strip() == "[]"


def test_official_to_ours_and_back_is_exact_and_fuses_qkv():
  params = numpy_vit.random_official_params(16, 2, 2, 32, 4, 5, 5, representation=6)
  ours, unused = checkpoint_mapping.official_to_ours(params, TINY)
  assert unused == []
  assert set(ours) == set(parameters.variable_shapes(TINY, 5, 8, representation_size=6))
  assert ours["encoderblock_1/attention/qkv/kernel"].shape == (16, 48)
  query = params["Transformer/encoderblock_1/MultiHeadDotProductAttention_1/query/kernel"]
  np.testing.assert_array_equal(ours["encoderblock_1/attention/qkv/kernel"][:, :16], query.reshape(16, 16))
  back = checkpoint_mapping.ours_to_official(ours, TINY)
  assert sorted(back) == sorted(params)
  for key in params:
    np.testing.assert_array_equal(back[key], params[key], err_msg=key)


def test_resize_equals_scipy_zoom_and_keeps_class_token():
  posemb = np.random.RandomState(2).randn(1, 1 + 7 * 7, 8).astype(np.float32)
  resized = checkpoint_mapping.resize_pos_embedding(posemb, (12, 10))
  expected_grid = scipy.ndimage.zoom(posemb[0, 1:].reshape(7, 7, 8), (12 / 7.0, 10 / 7.0, 1), order=1)
  assert resized.shape == (1, 1 + 120, 8)
  np.testing.assert_array_equal(resized[0, 0], posemb[0, 0])
  np.testing.assert_allclose(resized[0, 1:].reshape(12, 10, 8), expected_grid, rtol=1e-6)


def test_likely_cause_names_the_official_families():
  values = {"embedding/kernel": np.zeros([16, 16, 3, 768], np.float32)}
  assert (checkpoint_mapping.likely_cause(
      values, configs.get_config("Ti/16")) == "checkpoint looks like ViT-B (hidden 768), model is ViT-Ti (hidden 192)")
  values = {"embedding/kernel": np.zeros([32, 32, 3, 768], np.float32)}
  assert "patch size 32" in checkpoint_mapping.likely_cause(values, configs.get_config("B/16"))


def test_fit_records_the_dropped_head_and_the_resized_grid():
  params = numpy_vit.random_official_params(16, 2, 2, 32, 4, 1 + 2 * 2, 21, representation=16, seed=4)
  ours, _ = checkpoint_mapping.official_to_ours(params, TINY)
  shapes = parameters.variable_shapes(TINY, 3, (12, 16), representation_size=16)
  fit = checkpoint_mapping.fit_to_model(ours, shapes, TINY, (12, 16))
  assert fit.new_head == (21, 3) and fit.pos_grids == ("2x2", "3x4")
  assert fit.unused == fit.missing == ["head/bias", "head/kernel", "pre_logits/bias", "pre_logits/kernel"]
  assert fit.values["pos_embedding"].shape == (1, 13, 16)
  same = checkpoint_mapping.fit_to_model(ours, parameters.variable_shapes(TINY, 21, 8, 16), TINY, 8)
  assert same.new_head is None and same.pos_grids is None and same.missing == [] and same.unused == []


def test_fit_refuses_another_depth_once_with_both_counts():
  params = numpy_vit.random_official_params(16, 3, 2, 32, 4, 5, 5)
  ours, unused = checkpoint_mapping.official_to_ours(params, TINY)
  assert unused == [] and "encoderblock_2/mlp/dense_1/bias" in ours  # every block of the file is converted
  with pytest.raises(ValueError, match="3 encoder blocks, model tiny has 2"):
    checkpoint_mapping.fit_to_model(ours, parameters.variable_shapes(TINY, 5, 8), TINY, 8)
