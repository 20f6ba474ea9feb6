"""Official ViT checkpoints (.npz) and our TF checkpoints <-> the variables of vit_raw.model.

The official layout (google-research/vision_transformer, "original" naming) is the interchange format:
  embedding/{kernel [p,p,3,D], bias}, cls [1,1,D], Transformer/posembed_input/pos_embedding [1,T,D],
  Transformer/encoderblock_{i}/LayerNorm_0, MultiHeadDotProductAttention_1/{query,key,value}/{kernel [D,heads,hd],
  bias [heads,hd]}, MultiHeadDotProductAttention_1/out/{kernel [heads,hd,D], bias}, LayerNorm_2,
  MlpBlock_3/{Dense_0,Dense_1}, Transformer/encoder_norm, pre_logits, head.
big_vision files ("params/" prefix, MultiHeadDotProductAttention_0, LayerNorm_1, MlpBlock_0, top-level
pos_embedding without a class-token row) are renamed to that layout on reading (`_normalise_big_vision`).
Writing always produces the original layout, so any file we write loads in the official code.
"""
import io
import os
import re
import zipfile

import numpy as np
import scipy.ndimage
import tensorflow.compat.v1 as tf

from vit_raw import configs
from vit_raw import model

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
_WEIGHT_LEAVES = ("kernel", "bias", "scale", "cls", "pos_embedding")


def _expand(entry, num_layers):
  """The concrete (ours, [official]) names of one table entry, one per block for per-block entries."""
  ours, official = entry[0], entry[1]
  if "{i}" not in ours:
    return [(ours, official)]
  return [(ours.format(i=i), [n.format(i=i) for n in official]) for i in range(num_layers)]


# --- Reading files ------------------------------------------------------------------------------------------------


def _is_npz(path):
  return os.path.isfile(path) and zipfile.is_zipfile(path)


def _tf_prefix(path):
  """The checkpoint prefix for a directory or prefix path, or None if `path` is not a TF checkpoint."""
  if os.path.isdir(path):
    return tf.train.latest_checkpoint(path)
  if tf.io.gfile.exists(path + ".index"):
    return path
  return None


def read_npz(path):
  """{name: array} of an .npz file; ValueError with one line if it is not a readable .npz of arrays."""
  try:
    with open(path, "rb") as f:
      data = f.read()
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
      return {k: npz[k] for k in npz.files}
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError("%s is not a valid .npz checkpoint (%s: %s)" % (path, type(e).__name__, e))


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


def official_to_ours(official, config):
  """Converts original-layout arrays to {our name: array}; returns (ours, unused official names)."""
  ours, used = {}, set()
  layers = _count_layers(official)
  for entry in MAPPING:
    to_ours = entry[2]
    for our_name, names in _expand(entry, max(layers, config.num_layers)):
      if all(n in official for n in names):
        arrays = [official[n] for n in names]
        try:
          ours[our_name] = to_ours(arrays, config)
        except ValueError:
          expected = _expected_official_shape(entry, our_name, config)
          raise ValueError("checkpoint key %s has shape %s, model %s expects %s: %s" %
                           (names[0], arrays[0].shape, config.name, expected, _likely_cause(official, config)))
        used.update(names)
  return ours, sorted(set(official) - used)


def _expected_official_shape(entry, our_name, config):
  """Shape the first official tensor of `entry` must have for `config`."""
  generic = re.sub(r"encoderblock_\d+", "encoderblock_0", our_name)
  shape = model.variable_shapes(config, 1, config.patch_size)[generic]
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


def _count_layers(names):
  found = [int(m.group(1)) for m in (_BLOCK_RE.match(n) for n in names) if m]
  return max(found) + 1 if found else 0


def read_tf_checkpoint(prefix, scope="vit"):
  """{our name: array} of the model variables under `scope` in a TF checkpoint (optimizer slots left out)."""
  try:
    reader = tf.train.load_checkpoint(prefix)
    shapes = reader.get_variable_to_shape_map()
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError("%s is not a readable TensorFlow checkpoint (%s)" % (prefix, str(e).splitlines()[0]))
  head = scope.rstrip("/") + "/"
  out = {}
  for name in shapes:
    if name.startswith(head) and name.split("/")[-1] in _WEIGHT_LEAVES:
      out[name[len(head):]] = reader.get_tensor(name)
  if not out:
    raise ValueError("TensorFlow checkpoint %s holds no variables under scope %r (found e.g. %s)" %
                     (prefix, scope, ", ".join(sorted(shapes)[:3]) or "nothing"))
  return out


def read_checkpoint(path, config, scope="vit"):
  """Reads an official .npz (either naming) or a TF checkpoint of ours; returns ({our name: array}, unused names)."""
  if not path or not (os.path.exists(path) or tf.io.gfile.exists(path + ".index")):
    raise ValueError("checkpoint %s does not exist; expected an official .npz file or a TensorFlow checkpoint "
                     "(prefix or directory)" % path)
  if _is_npz(path):
    official = _normalise_big_vision(read_npz(path))
    ours, unused = official_to_ours(official, config)
    if not ours:
      raise ValueError("%s holds no ViT weights in the official layout (found e.g. %s)" %
                       (path, ", ".join(sorted(official)[:3]) or "no arrays"))
    return ours, unused
  prefix = _tf_prefix(path)
  if prefix is None:
    raise ValueError("%s is neither a valid .npz checkpoint nor a TensorFlow checkpoint (prefix or directory)" % path)
  return read_tf_checkpoint(prefix, scope), []


# --- Fitting a checkpoint to a model --------------------------------------------------------------------------------


def _likely_cause(values, config):
  """A short diagnosis of a checkpoint that does not fit `config`: other hidden size, patch size or depth."""
  kernel = values.get("embedding/kernel")
  if kernel is not None and kernel.ndim == 4:
    hidden, patch = kernel.shape[-1], kernel.shape[0]
    if hidden != config.hidden_size:
      family = configs.family_of_hidden(hidden) or "another model"
      return "checkpoint looks like %s (hidden %d), model is %s (hidden %d)" % (
          family, hidden, config.name.split("/")[0], config.hidden_size)
    if patch != config.patch_size:
      return "checkpoint has patch size %d, model %s has patch size %d" % (patch, config.name, config.patch_size)
  layers = _count_layers(values)
  if layers and layers != config.num_layers:
    return "checkpoint has %d encoder blocks, model %s has %d" % (layers, config.name, config.num_layers)
  return "checkpoint and model %s differ in shape (another variant or a changed config?)" % config.name


def resize_pos_embedding(posemb, new_grid, old_grid=None):
  """Resizes a [1, 1+h*w, D] position embedding to new_grid=(h', w'), keeping the class-token row.

  The grid is resampled as the official code does: scipy.ndimage.zoom with linear interpolation (order=1) and zoom
  factors (h'/h, w'/w, 1). old_grid defaults to a square grid.
  """
  rows = posemb.shape[1] - 1
  if old_grid is None:
    side = int(round(np.sqrt(rows)))
    if side * side != rows:
      raise ValueError("position embedding with %d grid rows is not square; cannot infer its grid to resize it" % rows)
    old_grid = (side, side)
  new_h, new_w = new_grid
  old_h, old_w = old_grid
  cls_row, grid = posemb[:, :1], posemb[0, 1:].reshape(old_h, old_w, -1)
  grid = scipy.ndimage.zoom(grid, (new_h / float(old_h), new_w / float(old_w), 1), order=1)
  return np.concatenate([cls_row, grid.reshape(1, new_h * new_w, -1)], axis=1).astype(posemb.dtype)


def fit_to_model(values, target_shapes, config, image_size, keep_pre_logits=False):
  """Matches checkpoint values to the model's variable shapes.

  Args:
    values: {our name: array} from read_checkpoint.
    target_shapes: {our name: shape} of the model variables.
    config, image_size: the model (for the position-embedding grid and error messages).
    keep_pre_logits: with a new class count, keep the checkpoint's pre_logits layer (else it is re-initialised).
  Returns:
    ({our name: array} to assign, names the model has but will not get from the checkpoint (fresh init),
     checkpoint names not used).
  Raises:
    ValueError naming the key, both shapes and the likely cause when a shape can't be mapped.
  """
  values = dict(values)
  unused = []
  layers = _count_layers(values)
  if layers and layers != config.num_layers:
    raise ValueError("checkpoint does not fit %s: %s" % (config.name, _likely_cause(values, config)))
  head = values.get("head/kernel")
  target_head = target_shapes.get("head/kernel")
  if head is not None and target_head is not None and tuple(head.shape) != tuple(target_head):
    # Transfer learning to another label set: the head (and the representation layer) start fresh, as officially.
    drop = ["head/kernel", "head/bias"] + ([] if keep_pre_logits else ["pre_logits/kernel", "pre_logits/bias"])
    for name in drop:
      if name in values:
        values.pop(name)
        unused.append(name)
  out = {}
  for name, value in values.items():
    if name not in target_shapes:
      unused.append(name)
      continue
    shape = tuple(target_shapes[name])
    if name == "pos_embedding" and value.shape != shape and value.ndim == 3 and value.shape[2] == shape[2]:
      h, w = configs.image_hw(image_size)
      value = resize_pos_embedding(value, (h // config.patch_size, w // config.patch_size))
    if tuple(value.shape) != shape:
      raise ValueError("checkpoint key %s has shape %s, model expects %s: %s" %
                       (name, tuple(value.shape), shape, _likely_cause(values, config)))
    out[name] = value
  missing = sorted(set(target_shapes) - set(out))
  return out, missing, sorted(unused)


def _model_variables(scope):
  """{our name: variable} of the model weights under `scope` (optimizer slots such as .../kernel/Adam left out)."""
  head = scope.rstrip("/") + "/"
  return {
      v.op.name[len(head):]: v
      for v in tf.global_variables()
      if v.op.name.startswith(head) and v.op.name.split("/")[-1] in _WEIGHT_LEAVES
  }


def _summary(names, limit=12):
  shown = ", ".join(names[:limit])
  return shown + (" ... (%d more)" % (len(names) - limit) if len(names) > limit else "")


def init_from_checkpoint(path, config, num_classes, image_size, keep_pre_logits=False, scope="vit"):
  """Prepares loading `path` into the model variables of the default graph; returns fn(sess) that assigns them.

  The file is read and checked now (ValueError with one line on any problem); fn(sess) feeds the arrays through
  placeholders (no large graph constants). Missing model variables keep their initial values (a fresh zero head
  for a new class count). fn.missing / fn.unused hold those keys; fn.report is a list of lines saying what loading
  does (tensors loaded, head re-initialised, position embeddings resized, keys unused or missing) and fn.message
  the same in one line, for the caller to log.
  """
  config = configs.get_config(config)
  variables = _model_variables(scope)
  if not variables:
    raise ValueError("no model variables under scope %r in the default graph; build the model before "
                     "init_from_checkpoint" % scope)
  head = variables.get("head/kernel")
  if head is not None and int(head.shape[-1]) != num_classes:
    raise ValueError("model head has %d classes but num_classes=%d" % (int(head.shape[-1]), num_classes))
  values, unused_file = read_checkpoint(path, config, scope)
  shapes = {name: tuple(v.shape.as_list()) for name, v in variables.items()}
  assign_values, missing, unused = fit_to_model(values, shapes, config, image_size, keep_pre_logits)
  unused = sorted(unused + unused_file)
  feeds, ops = {}, []
  with tf.name_scope("init_from_checkpoint"):
    for name, value in sorted(assign_values.items()):
      var = variables[name]
      placeholder = tf.placeholder(var.dtype.base_dtype, var.shape, name=name.replace("/", "_"))
      ops.append(tf.assign(var, placeholder))
      feeds[placeholder] = value.astype(var.dtype.base_dtype.as_numpy_dtype)
    # Re-zero a head that was dropped, in case the variables were already changed after initialisation.
    for name in ("head/kernel", "head/bias"):
      if name in missing and name in variables:
        ops.append(tf.assign(variables[name], tf.zeros_like(variables[name])))
  h, w = configs.image_hw(image_size)
  new_grid = "%dx%d" % (h // config.patch_size, w // config.patch_size)
  report = _load_report(path, values, shapes, assign_values, missing, unused, new_grid)
  message = "; ".join(report)

  def assign(sess):
    sess.run(ops, feed_dict=feeds)

  assign.missing, assign.unused, assign.message, assign.report = missing, unused, message, report
  return assign


def _grid_text(rows):
  side = int(round(np.sqrt(rows)))
  return "%dx%d" % (side, side) if side * side == rows else "%d positions" % rows


def _load_report(path, values, shapes, assigned, missing, unused, new_grid):
  """Lines that say what loading `path` into the model does."""
  report = ["checkpoint %s: %d of the model's %d tensors loaded" % (path, len(assigned), len(shapes))]
  head, target = values.get("head/kernel"), shapes.get("head/kernel")
  if head is not None and target is not None and tuple(head.shape) != tuple(target):
    report.append("head re-initialised to zeros (%d -> %d classes)" % (head.shape[-1], target[-1]))
  posemb, target = values.get("pos_embedding"), shapes.get("pos_embedding")
  if posemb is not None and target is not None and tuple(posemb.shape) != tuple(target):
    report.append("position embeddings resized (%s -> %s grid)" % (_grid_text(posemb.shape[1] - 1), new_grid))
  if unused:
    report.append("unused checkpoint keys: %s" % _summary(unused))
  fresh = [name for name in missing if not name.startswith("head/")]
  if fresh:
    report.append("model tensors not in the checkpoint (fresh init): %s" % _summary(fresh))
  return report


# --- Writing ------------------------------------------------------------------------------------------------------


def save_official_npz(values, config, path):
  """Writes {our name: array} as an official original-layout .npz (loadable by the official code and by us)."""
  official = ours_to_official(values, configs.get_config(config))
  directory = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(directory):
    os.makedirs(directory)
  with open(path, "wb") as f:
    np.savez(f, **official)
  return path


def model_values(sess, scope="vit"):
  """{our name: array} of the model variables in `sess`."""
  variables = _model_variables(scope)
  names = sorted(variables)
  return dict(zip(names, sess.run([variables[n] for n in names])))


def export_npz(sess, config, path, scope="vit"):
  """Writes the model variables of `sess` as an official original-layout .npz."""
  return save_official_npz(model_values(sess, scope), config, path)
