"""How the official ViT checkpoints (.npz) map to the variables of vit_raw.model, in NumPy only (no TensorFlow).

The official layout (google-research/vision_transformer, "original" naming) is the interchange format:
  embedding/{kernel [p,p,3,D], bias}, cls [1,1,D], Transformer/posembed_input/pos_embedding [1,T,D],
  Transformer/encoderblock_{i}/LayerNorm_0, MultiHeadDotProductAttention_1/{query,key,value}/{kernel [D,heads,hd],
  bias [heads,hd]}, MultiHeadDotProductAttention_1/out/{kernel [heads,hd,D], bias}, LayerNorm_2,
  MlpBlock_3/{Dense_0,Dense_1}, Transformer/encoder_norm, pre_logits, head.
big_vision files ("params/" prefix, MultiHeadDotProductAttention_0, LayerNorm_1, MlpBlock_0, top-level
pos_embedding without a class-token row) are renamed to that layout on reading (`_normalise_big_vision`).
Writing always produces the original layout, so any file we write loads in the official code.

`fit_to_model` matches checkpoint values (from an .npz or from our TF checkpoints, both in our names) to a model:
the one place that compares depths and heads and resizes the position embedding. vit_raw/checkpoint.py reads TF
checkpoints and assigns the result to the variables of a graph.
"""
import collections
import io
import os
import re

import numpy as np
import scipy.ndimage

from vit_raw import configs
from vit_raw import parameters
from vit_raw.errors import ModelError

_BLOCK = "Transformer/encoderblock_{i}/"
_ATTN = _BLOCK + "MultiHeadDotProductAttention_1/"

# --- The one mapping table ------------------------------------------------------------------------------------------
# (our variable name relative to the model scope, [official names], to_ours(arrays, cfg), to_official(array, cfg)).
# "{i}" is the encoder block index. Most entries are a plain copy; the attention entries fuse/split query, key and
# value ([D,heads,hd] each) into our single [D,3D] kernel, and flatten the heads of the output projection.


def _same(arrays, cfg):
  del cfg
  return arrays[0]


def _same_out(array, cfg):
  del cfg
  return [array]


def _fuse_qkv_kernel(arrays, cfg):
  d = cfg.hidden_size
  return np.concatenate([a.reshape(d, d) for a in arrays], axis=1)


def _split_qkv_kernel(array, cfg):
  d, h = cfg.hidden_size, cfg.num_heads
  return [part.reshape(d, h, d // h) for part in np.split(array, 3, axis=1)]


def _fuse_qkv_bias(arrays, cfg):
  return np.concatenate([a.reshape(cfg.hidden_size) for a in arrays])


def _split_qkv_bias(array, cfg):
  h = cfg.num_heads
  return [part.reshape(h, cfg.hidden_size // h) for part in np.split(array, 3)]


def _merge_heads_out(arrays, cfg):
  return arrays[0].reshape(cfg.hidden_size, cfg.hidden_size)


def _split_heads_out(array, cfg):
  d, h = cfg.hidden_size, cfg.num_heads
  return [array.reshape(h, d // h, d)]


_COPY = (_same, _same_out)
MAPPING = (
    ("embedding/kernel", ["embedding/kernel"]) + _COPY,
    ("embedding/bias", ["embedding/bias"]) + _COPY,
    ("cls", ["cls"]) + _COPY,
    ("pos_embedding", ["Transformer/posembed_input/pos_embedding"]) + _COPY,
    ("encoderblock_{i}/ln_attn/scale", [_BLOCK + "LayerNorm_0/scale"]) + _COPY,
    ("encoderblock_{i}/ln_attn/bias", [_BLOCK + "LayerNorm_0/bias"]) + _COPY,
    ("encoderblock_{i}/attention/qkv/kernel", [_ATTN + n + "/kernel" for n in ("query", "key", "value")],
     _fuse_qkv_kernel, _split_qkv_kernel),
    ("encoderblock_{i}/attention/qkv/bias", [_ATTN + n + "/bias" for n in ("query", "key", "value")], _fuse_qkv_bias,
     _split_qkv_bias),
    ("encoderblock_{i}/attention/out/kernel", [_ATTN + "out/kernel"], _merge_heads_out, _split_heads_out),
    ("encoderblock_{i}/attention/out/bias", [_ATTN + "out/bias"]) + _COPY,
    ("encoderblock_{i}/ln_mlp/scale", [_BLOCK + "LayerNorm_2/scale"]) + _COPY,
    ("encoderblock_{i}/ln_mlp/bias", [_BLOCK + "LayerNorm_2/bias"]) + _COPY,
    ("encoderblock_{i}/mlp/dense_0/kernel", [_BLOCK + "MlpBlock_3/Dense_0/kernel"]) + _COPY,
    ("encoderblock_{i}/mlp/dense_0/bias", [_BLOCK + "MlpBlock_3/Dense_0/bias"]) + _COPY,
    ("encoderblock_{i}/mlp/dense_1/kernel", [_BLOCK + "MlpBlock_3/Dense_1/kernel"]) + _COPY,
    ("encoderblock_{i}/mlp/dense_1/bias", [_BLOCK + "MlpBlock_3/Dense_1/bias"]) + _COPY,
    ("encoder_norm/scale", ["Transformer/encoder_norm/scale"]) + _COPY,
    ("encoder_norm/bias", ["Transformer/encoder_norm/bias"]) + _COPY,
    ("pre_logits/kernel", ["pre_logits/kernel"]) + _COPY,
    ("pre_logits/bias", ["pre_logits/bias"]) + _COPY,
    ("head/kernel", ["head/kernel"]) + _COPY,
    ("head/bias", ["head/bias"]) + _COPY,
)

# big_vision -> original names inside an encoder block (the module numbering differs, the tensors do not).
_BIG_VISION_RENAMES = (
    (re.compile(r"^(Transformer/encoderblock_\d+/)MultiHeadDotProductAttention_0/"),
     r"\1MultiHeadDotProductAttention_1/"),
    (re.compile(r"^(Transformer/encoderblock_\d+/)LayerNorm_1/"), r"\1LayerNorm_2/"),
    (re.compile(r"^(Transformer/encoderblock_\d+/)MlpBlock_0/"), r"\1MlpBlock_3/"),
)
_POSEMB = "Transformer/posembed_input/pos_embedding"
_BLOCK_RE = re.compile(r"^(?:Transformer/)?encoderblock_(\d+)/")

Fit = collections.namedtuple("Fit", ["values", "missing", "unused", "new_head", "pos_grids"])
Fit.__doc__ = """Checkpoint values matched to a model (fit_to_model).

Attributes:
  values: {our name: array} to assign, each in the model's shape.
  missing: sorted names the model has and the checkpoint does not give (they keep their fresh initial values).
  unused: sorted checkpoint names left out (other tensors, a dropped head).
  new_head: (checkpoint classes, model classes) when the head was dropped for another class count, else None.
  pos_grids: (checkpoint grid, model grid) as text ("2x2", "3x4") when the position embedding was resized, else None.
"""


def _expand(entry, num_layers):
  """The concrete (ours, [official]) names of one table entry, one per block for per-block entries."""
  ours, official = entry[0], entry[1]
  if "{i}" not in ours:
    return [(ours, official)]
  return [(ours.format(i=i), [n.format(i=i) for n in official]) for i in range(num_layers)]


def count_layers(names):
  """Encoder blocks named in `names` (ours or official): 1 + the highest block index, 0 if there is none."""
  found = [int(m.group(1)) for m in (_BLOCK_RE.match(n) for n in names) if m]
  return max(found) + 1 if found else 0


# --- The .npz file ------------------------------------------------------------------------------------------------


def read_npz(path):
  """{name: array} of an .npz file; ValueError with one line if it is not a readable .npz of arrays."""
  try:
    with open(path, "rb") as f:
      data = f.read()
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
      return {k: npz[k] for k in npz.files}
  except Exception as e:  # pylint: disable=broad-except
    raise ModelError("%s is not a valid .npz checkpoint (%s: %s)" % (path, type(e).__name__, e))


def _normalise_big_vision(raw):
  """Renames big_vision keys to the original layout; big_vision's class-token-less posemb gets a zero cls row.

  big_vision adds the position embedding before prepending the class token, so its pos_embedding has h*w rows; a
  zero row for the class token makes our (add-after-concat) model compute exactly the same thing.
  """
  if not any(k.startswith("params/") for k in raw):
    if not any("MultiHeadDotProductAttention_0" in k for k in raw) and "pos_embedding" not in raw:
      return raw
  out = {}
  for key, value in raw.items():
    if key.startswith("params/"):
      key = key[len("params/"):]
    elif "/" in key and key.split("/")[0] in ("opt", "ema", "state", "step"):
      out["[big_vision] " + key] = value  # optimizer/EMA state: reported as unused, never loaded
      continue
    for pattern, replacement in _BIG_VISION_RENAMES:
      key = pattern.sub(replacement, key)
    if key in ("pos_embedding", "Transformer/pos_embedding"):
      rows = value.shape[1]
      side = int(round(np.sqrt(rows)))
      if side * side == rows:  # no class-token row
        value = np.concatenate([np.zeros_like(value[:, :1]), value], axis=1)
      key = _POSEMB
    out[key] = value
  return out


def read_official_npz(path, config):
  """Reads an official .npz (either naming); returns ({our name: array}, unused official names).

  ValueError with one line when the file is unreadable, holds no ViT weights or has a tensor that cannot be mapped.
  """
  official = _normalise_big_vision(read_npz(path))
  ours, unused = official_to_ours(official, config)
  if not ours:
    raise ModelError("%s holds no ViT weights in the official layout (found e.g. %s)" %
                     (path, ", ".join(sorted(official)[:3]) or "no arrays"))
  return ours, unused


def save_official_npz(values, config, path):
  """Writes {our name: array} as an official original-layout .npz (loadable by the official code and by us)."""
  config = configs.get_config(config)
  if config.stem != "patch":
    raise ModelError("the official .npz layout has the patch embedding only; this %s has a %s stem (export it as pb, "
                     "saved_model or onnx)" % (config.name, config.stem))
  official = ours_to_official(values, config)
  directory = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(directory):
    os.makedirs(directory)
  with open(path, "wb") as f:
    np.savez(f, **official)
  return path


# --- Names ----------------------------------------------------------------------------------------------------------


def official_to_ours(official, config):
  """Converts original-layout arrays to {our name: array}; returns (ours, unused official names).

  Every block the file has is converted (also beyond the model's depth), so that fit_to_model sees the file's depth.
  """
  ours, used = {}, set()
  for entry in MAPPING:
    to_ours = entry[2]
    for our_name, names in _expand(entry, max(count_layers(official), config.num_layers)):
      if all(n in official for n in names):
        arrays = [official[n] for n in names]
        try:
          ours[our_name] = to_ours(arrays, config)
        except ValueError:
          expected = _expected_official_shape(entry, our_name, config)
          raise ModelError("checkpoint key %s has shape %s, model %s expects %s: %s" %
                           (names[0], arrays[0].shape, config.name, expected, likely_cause(official, config)))
        used.update(names)
  return ours, sorted(set(official) - used)


def _expected_official_shape(entry, our_name, config):
  """Shape the first official tensor of `entry` must have for `config`."""
  generic = re.sub(r"encoderblock_\d+", "encoderblock_0", our_name)
  shape = parameters.variable_shapes(config, 1, config.patch_size)[generic]
  return tuple(entry[3](np.zeros(shape, np.float32), config)[0].shape)


def ours_to_official(ours, config):
  """Converts {our name: array} to the original official layout."""
  official = {}
  for entry in MAPPING:
    to_official = entry[3]
    for our_name, names in _expand(entry, config.num_layers):
      if our_name in ours:
        official.update(zip(names, to_official(np.asarray(ours[our_name]), config)))
  return official


# --- Fitting a checkpoint to a model --------------------------------------------------------------------------------


def likely_cause(values, config):
  """A short diagnosis of a checkpoint that does not fit `config`: other stem, hidden size, patch size or depth."""
  has_conv_stem = "stem_0/kernel" in values
  if has_conv_stem != (config.stem == "conv"):
    return "checkpoint has %s, model %s has %s (--stem=%s)" % (
        _STEM_TEXT[has_conv_stem], config.name, _STEM_TEXT[not has_conv_stem], "conv" if has_conv_stem else "patch")
  kernel = values.get("embedding/kernel")
  if kernel is not None and kernel.ndim == 4:
    hidden, patch = kernel.shape[-1], kernel.shape[0]
    if hidden != config.hidden_size:
      family = configs.family_of_hidden(hidden) or "another model"
      return "checkpoint looks like %s (hidden %d), model is %s (hidden %d)" % (
          family, hidden, config.name.split("/")[0], config.hidden_size)
    if patch != config.patch_size:
      return "checkpoint has patch size %d, model %s has patch size %d" % (patch, config.name, config.patch_size)
  layers = count_layers(values)
  if layers and layers != config.num_layers:
    return "checkpoint has %d encoder blocks, model %s has %d" % (layers, config.name, config.num_layers)
  return "checkpoint and model %s differ in shape (another variant or a changed config?)" % config.name


_STEM_TEXT = {True: "a convolutional stem (stem_0/...)", False: "the patch embedding"}


def resize_pos_embedding(posemb, new_grid, old_grid=None):
  """Resizes a [1, 1+h*w, D] position embedding to new_grid=(h', w'), keeping the class-token row.

  The grid is resampled as the official code does: scipy.ndimage.zoom with linear interpolation (order=1) and zoom
  factors (h'/h, w'/w, 1). old_grid defaults to a square grid.
  """
  rows = posemb.shape[1] - 1
  if old_grid is None:
    side = int(round(np.sqrt(rows)))
    if side * side != rows:
      raise ModelError("position embedding with %d grid rows is not square; cannot infer its grid to resize it" % rows)
    old_grid = (side, side)
  new_h, new_w = new_grid
  old_h, old_w = old_grid
  cls_row, grid = posemb[:, :1], posemb[0, 1:].reshape(old_h, old_w, -1)
  grid = scipy.ndimage.zoom(grid, (new_h / float(old_h), new_w / float(old_w), 1), order=1)
  return np.concatenate([cls_row, grid.reshape(1, new_h * new_w, -1)], axis=1).astype(posemb.dtype)


def _grid_text(rows):
  side = int(round(np.sqrt(rows)))
  return "%dx%d" % (side, side) if side * side == rows else "%d positions" % rows


def fit_to_model(values, target_shapes, config, image_size, keep_pre_logits=False):
  """Matches checkpoint values to the model's variable shapes; returns a Fit.

  Args:
    values: {our name: array} from read_official_npz or vit_raw.checkpoint.read_checkpoint.
    target_shapes: {our name: shape} of the model variables.
    config, image_size: the model (for the position-embedding grid and error messages).
    keep_pre_logits: with a new class count, keep the checkpoint's pre_logits layer (else it is re-initialised).
  Raises:
    ValueError naming the key, both shapes and the likely cause when a shape can't be mapped, or both depths.
  """
  values = dict(values)
  unused = []
  layers = count_layers(values)
  if layers and layers != config.num_layers:
    raise ModelError("checkpoint does not fit %s: %s" % (config.name, likely_cause(values, config)))
  head = values.get("head/kernel")
  target_head = target_shapes.get("head/kernel")
  new_head = None
  if head is not None and target_head is not None and tuple(head.shape) != tuple(target_head):
    # Transfer learning to another label set: the head (and the representation layer) start fresh, as officially.
    new_head = (int(head.shape[-1]), int(target_head[-1]))
    drop = ["head/kernel", "head/bias"] + ([] if keep_pre_logits else ["pre_logits/kernel", "pre_logits/bias"])
    for name in drop:
      if name in values:
        values.pop(name)
        unused.append(name)
  out, pos_grids = {}, None
  for name, value in values.items():
    if name not in target_shapes:
      unused.append(name)
      continue
    shape = tuple(target_shapes[name])
    if name == "pos_embedding" and value.shape != shape and value.ndim == 3 and value.shape[2] == shape[2]:
      h, w = configs.image_hw(image_size)
      grid = (h // config.patch_size, w // config.patch_size)
      pos_grids = (_grid_text(value.shape[1] - 1), "%dx%d" % grid)
      value = resize_pos_embedding(value, grid)
    if tuple(value.shape) != shape:
      raise ModelError("checkpoint key %s has shape %s, model expects %s: %s" %
                       (name, tuple(value.shape), shape, likely_cause(values, config)))
    out[name] = value
  missing = sorted(set(target_shapes) - set(out))
  return Fit(out, missing, sorted(unused), new_head, pos_grids)
