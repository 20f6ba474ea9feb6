"""tools.rollout / tools.attention: rollout equal to a NumPy transcription of Abnar & Zuidema's formula on a real
model's attention, maps summing to 1, and a model built to look at one patch peaking on that patch."""
import os
import tempfile

import cv2
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from tests import numpy_vit
from tests import tool_helpers
from tools import inference_graph
from tools import model_source
from tools import rollout

GRID = 4  # 16x16 images in 4x4 patches


def _tiny_attentions(layers=3, seed=0):
  """Per-layer attention [B, heads, T, T] of a random tiny model on random images (a real softmax output)."""
  shape = dict(tool_helpers.SHAPE, num_layers=layers)
  params = numpy_vit.random_official_params(16, layers, 2, 32, 4, 1 + GRID * GRID, 3, seed=seed, scale=0.5)
  path = tool_helpers.write_npz(os.path.join(tempfile.mkdtemp(), "m.npz"), params)
  source = model_source.from_checkpoint(path, "tiny", shape=shape)
  ends = inference_graph.build(source, return_attention=True)
  with tf.Session() as sess:
    inference_graph.load_weights(sess, source.values)
    return sess.run(ends.attentions, {ends.images: tool_helpers.uint8_images(2, 16)})


def _reference_rollout(layers, fusion, discard):
  """Rollout of one image written out step by step: layers is a list of [heads, T, T]."""
  tokens = layers[0].shape[-1]
  product = np.identity(tokens)
  for heads in layers:
    fused = np.zeros([tokens, tokens])
    for i in range(tokens):
      for j in range(tokens):
        values = [float(h[i, j]) for h in heads]
        fused[i, j] = {"mean": sum(values) / len(values), "max": max(values), "min": min(values)}[fusion]
    if discard:
      order = sorted(range(tokens * tokens), key=lambda k: fused.flat[k])
      for k in order[:int(tokens * tokens * discard)]:
        if k != 0:
          fused.flat[k] = 0.0
    mixed = fused + np.identity(tokens)
    for i in range(tokens):
      mixed[i] /= mixed[i].sum()
    product = mixed.dot(product)
  row = product[0, 1:]
  return row / row.sum()


@pytest.mark.parametrize("fusion", rollout.HEAD_FUSIONS)
@pytest.mark.parametrize("discard", [0.0, 0.6])
def test_rollout_equals_reference_formula(fusion, discard):
  attentions = _tiny_attentions()
  assert len(attentions) == 3 and attentions[0].shape == (2, 2, 17, 17)
  maps = rollout.rollout(attentions, fusion, discard)
  assert maps.shape == (2, GRID * GRID)
  for b in range(2):
    expected = _reference_rollout([a[b] for a in attentions], fusion, discard)
    np.testing.assert_allclose(maps[b], expected, rtol=1e-9, atol=1e-12)


def test_maps_sum_to_one_over_the_patches():
  attentions = _tiny_attentions(layers=2, seed=3)
  for maps in (rollout.rollout(attentions, "mean", 0.9), rollout.rollout(attentions, "min"),
               rollout.last_layer(attentions, "max"), rollout.per_layer(attentions)[1]):
    assert (maps >= 0).all()
    np.testing.assert_allclose(maps.sum(axis=-1), 1.0, rtol=1e-9)
  # last_layer is the class token's (head-averaged) attention to the patches, renormalised.
  last = attentions[-1].mean(axis=1)[:, 0, 1:]
  np.testing.assert_allclose(rollout.last_layer(attentions), last / last.sum(-1, keepdims=True), rtol=1e-6)


def _looks_at(target, layers=2):
  """Official-layout weights of a model whose every query attends to patch `target`.

  Patch embeddings are zero, so a token is its position embedding; only the target's row is non-zero (10 on
  feature 0), layer norm turns it into a large feature 0 and every other token into 0; the key kernel reads feature
  0 and every query is constant 1, so each score is large for the target and 0 elsewhere. Values, the output
  projection and the MLP are zero, so the residual stream (and with it the attention) is the same in every layer.
  """
  d, heads, mlp = 16, 2, 32
  hd = d // heads
  params = numpy_vit.random_official_params(d, layers, heads, mlp, 4, 1 + GRID * GRID, 3)
  for key in params:
    if not key.startswith("head/"):
      params[key] = np.zeros_like(params[key])
    if key.endswith("/scale"):
      params[key] = np.ones_like(params[key])
  params["Transformer/posembed_input/pos_embedding"][0, 1 + target, 0] = 10.0
  for i in range(layers):
    att = "Transformer/encoderblock_%d/MultiHeadDotProductAttention_1/" % i
    params[att + "query/bias"] = np.ones([heads, hd], np.float32)
    params[att + "key/kernel"][0] = 5.0
  return params


def test_model_built_to_look_at_one_patch_peaks_there():
  target = 9  # row 2, column 1 of the 4x4 grid
  directory = tempfile.mkdtemp()
  npz = tool_helpers.write_npz(os.path.join(directory, "looks.npz"), _looks_at(target))
  image = os.path.join(directory, "photo.png")
  cv2.imwrite(image, np.random.RandomState(0).randint(0, 256, [48, 64, 3]).astype(np.uint8))
  out = os.path.join(directory, "maps")
  done = tool_helpers.run_tool("tools.attention", "--checkpoint", npz,
                               *(tool_helpers.MODEL_FLAGS + ["--image", image, "--out", out, "--discard_ratio", "0"]))
  assert done.returncode == 0, done.stderr[-3000:]
  grid_map = np.load(os.path.join(out, "photo_attention.npy"))
  assert grid_map.shape == (GRID, GRID)
  assert np.unravel_index(int(np.argmax(grid_map)), grid_map.shape) == divmod(target, GRID)
  np.testing.assert_allclose(grid_map.sum(), 1.0, rtol=1e-5)
  side = cv2.imread(os.path.join(out, "photo_attention.png"))
  layers = cv2.imread(os.path.join(out, "photo_layers.png"))
  # Drawn at >= 256 px on the short side: the original and the overlay side by side, one tile per layer.
  assert side.shape[0] == 48 * 6 and side.shape[1] == 2 * 64 * 6 + 4
  assert layers.shape == side.shape
  assert "peak at patch row 2 col 1" in done.stdout
  # An existing map is not replaced without --overwrite; an undecodable image is skipped with a line.
  bad = os.path.join(directory, "bad.png")
  with open(bad, "w") as f:
    f.write("not a png")
  again = tool_helpers.run_tool("tools.attention", "--checkpoint", npz,
                                *(tool_helpers.MODEL_FLAGS + ["--image", image, "--out", out]))
  assert again.returncode == 2 and "--overwrite" in tool_helpers.error_lines(again.stderr)[0]
  skipped = tool_helpers.run_tool(
      "tools.attention", "--checkpoint", npz,
      *(tool_helpers.MODEL_FLAGS + ["--image", bad, "--image", image, "--out", out, "--overwrite"]))
  assert skipped.returncode == 0, skipped.stderr[-2000:]
  assert [line for line in tool_helpers.error_lines(skipped.stderr) if line.startswith("skipped " + bad)]
  assert not os.path.exists(os.path.join(out, "bad_attention.png"))


def test_help_lists_every_flag():
  done = tool_helpers.run_tool("tools.attention", "--help")
  text = done.stdout + done.stderr
  for name in ("model_dir", "checkpoint", "model", "image", "out", "method", "head_fusion", "discard_ratio",
               "overwrite", "display_size"):
    assert "  --%s: " % name in text or "  --[no]%s: " % name in text, name
