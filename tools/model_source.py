"""Which trained model a tool command uses: a run folder, or a checkpoint with its model named on the command line.

`--model_dir RUN` takes everything from the run (launch/run_record.py): model and shape overrides, image size,
classes and the latest checkpoint. `--checkpoint PATH --model NAME [--image_size S] [--num_classes C]` takes a
checkpoint of ours (prefix or folder) or an official .npz (either naming); the image size defaults to the one the
checkpoint's position embedding was made for and the class count to its head. The weights are read and checked
against the model here, so a checkpoint of another variant or image size is one line before any graph is built.
"""
import collections
import os

from absl import flags

from tools.command import UsageError
from vit_raw import configs

CLASS_NAMES_FILE = "class_names.txt"

ModelSource = collections.namedtuple(
    "ModelSource",
    ["config", "image_size", "num_classes", "class_names", "checkpoint", "representation_size", "values", "weights"],
    defaults=("raw",))
ModelSource.__doc__ = """A model and its weights, ready to build.

Attributes:
  config: the vit_raw ViTConfig.
  image_size: (height, width) of the model input.
  num_classes: classes of the head.
  class_names: list of names in label order, or None when the run/checkpoint has no class_names.txt.
  checkpoint: the path the weights came from.
  representation_size: width of the pre_logits layer, or None.
  values: {variable name under the model scope: float32 array}, fitted to the model (position embedding resized
    only with --resize_pos_embedding).
  weights: "ema" when the values are the moving average a run kept with --ema_decay, "raw" for the trained weights.
"""

WEIGHTS = ("auto", "ema", "raw")


def define_flags():
  """Registers the model-selection flags shared by infer, export, attention and bench_infer (idempotent)."""
  if "model_dir" in flags.FLAGS:
    return
  flags.DEFINE_string(
      "model_dir", None, "Run folder of launch.train: model, image size, classes and the latest "
      "checkpoint are read from it (flags.txt, class_names.txt). Use instead of --model/--image_size/--num_classes; "
      "with --checkpoint, that checkpoint is used instead of the latest.")
  flags.DEFINE_string(
      "checkpoint", None, "A checkpoint of our trainer (prefix or folder) or an official ViT .npz "
      "(original or big_vision naming).")
  flags.DEFINE_string(
      "model", None, "Model variant with --checkpoint: tiny, ViT-Ti/16, ViT-S/16, ViT-S/32, ViT-B/16, "
      "ViT-B/32, ViT-B/8, ViT-L/16, ViT-L/32, ViT-H/14 (also B_16, b/16, ...).")
  for name in configs.SHAPE_FIELDS:
    flags.DEFINE_integer(name, None, "Shape override of --model (as in launch.train).")
  flags.DEFINE_enum("stem", None, list(configs.STEMS), "Stem of --model (as in launch.train); default: the "
                    "model's own (patch).")
  flags.DEFINE_string(
      "image_size", None, "Model input size with --checkpoint: an int or HxW (e.g. 224x320). Default: "
      "the size the checkpoint's position embedding was made for.")
  flags.DEFINE_integer("num_classes", None, "Classes of the head with --checkpoint; default: the checkpoint's head.")
  flags.DEFINE_bool(
      "resize_pos_embedding", False, "Allow --image_size to differ from the checkpoint's: the position "
      "embedding is interpolated as in official fine-tuning (the model then sees positions it was not trained on).")
  flags.DEFINE_string("scope", "vit", "Variable scope of the model in our TF checkpoints.")
  flags.DEFINE_enum(
      "weights", "auto", list(WEIGHTS), "Which weights of a checkpoint of ours: ema, the moving average a run "
      "keeps with --ema_decay (what its ema_top1 was measured on); raw, the trained weights; auto, ema when the "
      "checkpoint holds one, else raw. An official .npz holds one set (raw).")


_SHAPE_FLAGS = configs.CONFIG_FIELDS


def parse_size(text):
  """(height, width) from "224" or "224x320"; UsageError otherwise."""
  try:
    parts = [int(p) for p in str(text).lower().split("x")]
  except ValueError:
    raise UsageError("--image_size %r is not an int or HxW" % text)
  if len(parts) == 1:
    parts = parts * 2
  if len(parts) != 2 or min(parts) <= 0:
    raise UsageError("--image_size %r is not an int or HxW" % text)
  return tuple(parts)


def class_names_beside(path):
  """Names from class_names.txt in the folder `path` is in (or is), or None."""
  folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
  names_path = os.path.join(folder, CLASS_NAMES_FILE)
  if not os.path.isfile(names_path):
    return None
  with open(names_path) as f:
    return [line.rstrip("\n") for line in f if line.strip()] or None


def from_flags(fv=None):
  """ModelSource of the model-selection flags; UsageError (one line) on anything that does not fit."""
  fv = fv or flags.FLAGS
  shape = {name: fv[name].value for name in _SHAPE_FLAGS}
  if fv.model_dir:
    given = [name for name in ("model", "image_size", "num_classes") + _SHAPE_FLAGS if fv[name].value is not None]
    if given:
      raise UsageError("--model_dir %s describes the model; drop --%s (or use --checkpoint without --model_dir)" %
                       (fv.model_dir, " --".join(given)))
    return from_run(fv.model_dir, fv.checkpoint, fv.scope, fv.weights)
  if not fv.checkpoint:
    raise UsageError("give --model_dir RUN, or --checkpoint PATH with --model NAME")
  if not fv.model:
    raise UsageError("--checkpoint %s needs --model (e.g. ViT-B/16, or tiny with its shape flags)" % fv.checkpoint)
  size = parse_size(fv.image_size) if fv.image_size else None
  return from_checkpoint(fv.checkpoint, fv.model, size, fv.num_classes, shape, fv.resize_pos_embedding, fv.scope,
                         fv.weights)


def describe(source):
  """One line saying which weights a tool is using."""
  if source.weights == "ema":
    return "weights: the moving average (EMA) kept by the run, from %s (--weights raw: the trained weights)" % \
        source.checkpoint
  return "weights: %s" % source.checkpoint


def from_run(model_dir, checkpoint=None, scope="vit", weights="auto"):
  """ModelSource of a launch.train run folder (its latest checkpoint unless `checkpoint` is given)."""
  from launch import run_record  # pylint: disable=g-import-not-at-top
  try:
    run = run_record.run_model(model_dir)
  except ValueError as e:
    raise UsageError("--model_dir: %s" % e)
  path = checkpoint or run.checkpoint
  if not path:
    raise UsageError("--model_dir %s has no checkpoint yet (train first, or pass --checkpoint)" % model_dir)
  return _load(path, run.config, (run.image_size, run.image_size), run.num_classes, run.class_names, False, scope,
               weights)


def from_checkpoint(path, model_name, image_size=None, num_classes=None, shape=None, resize_pos_embedding=False,
                    scope="vit", weights="auto"):
  """ModelSource of a checkpoint of ours or an official .npz, for the model `model_name` (+ shape overrides)."""
  try:
    config = configs.get_config(model_name, **(shape or {}))
  except ValueError as e:
    raise UsageError("--model: %s" % e)
  return _load(path, config, image_size, num_classes, class_names_beside(path), resize_pos_embedding, scope, weights)


def _grid_of(values, config):
  """(rows, cols) of patches the checkpoint's position embedding was made for, or None if not square."""
  pos = values.get("pos_embedding")
  if pos is None:
    return None
  side = int(round((pos.shape[1] - 1)**0.5))
  return (side, side) if side * side == pos.shape[1] - 1 else None


def _read(path, config, scope, weights):
  """({name: array}, "ema" or "raw") of `path` as --weights asks; UsageError when it cannot be had."""
  from launch import ema  # pylint: disable=g-import-not-at-top
  from vit_raw import checkpoint as vit_checkpoint  # pylint: disable=g-import-not-at-top
  try:
    values, _ = vit_checkpoint.read_checkpoint(path, config, scope)
  except ValueError as e:
    raise UsageError(str(e) if path in str(e) else "checkpoint %s does not fit %s: %s" % (path, config.name, e))
  if weights == "raw":
    return values, "raw"
  prefix = vit_checkpoint.tf_prefix(path)
  averaged = None
  if prefix is not None:
    try:
      averaged = vit_checkpoint.read_tf_checkpoint(prefix, ema.shadow_name(scope))
    except ValueError:  # no shadows: trained without --ema_decay
      averaged = None
  if averaged is None:
    if weights == "ema":
      raise UsageError("checkpoint %s holds no moving average of the weights (%s/...): the run was trained without "
                       "--ema_decay; use --weights raw (or auto)" % (path, ema.shadow_name(scope)))
    return values, "raw"
  if set(averaged) != set(values):
    raise UsageError("checkpoint %s: its moving average covers %d weights, the model %d (%s); use --weights raw" %
                     (path, len(averaged), len(values), ", ".join(sorted(set(values) ^ set(averaged))[:3])))
  return averaged, "ema"


def _load(path, config, image_size, num_classes, class_names, resize_pos_embedding, scope, weights="auto"):
  """Reads `path`, checks it against the model and returns the ModelSource."""
  from vit_raw import checkpoint_mapping  # pylint: disable=g-import-not-at-top
  from vit_raw import model  # pylint: disable=g-import-not-at-top
  values, which = _read(path, config, scope, weights)
  grid = _grid_of(values, config)
  p = config.patch_size
  if image_size is None:
    if grid is None:
      raise UsageError("checkpoint %s: cannot tell its image size from the position embedding; pass --image_size" %
                       path)
    image_size = (grid[0] * p, grid[1] * p)
  if image_size[0] % p or image_size[1] % p:
    raise UsageError("image size %dx%d is not divisible by the patch size %d of %s" %
                     (image_size[0], image_size[1], p, config.name))
  want = (image_size[0] // p, image_size[1] // p)
  pos = values.get("pos_embedding")
  if pos is not None and pos.shape[1] != want[0] * want[1] + 1 and not resize_pos_embedding:
    made_for = "%dx%d patches, image size %d" % (grid[0], grid[1], grid[0] * p) if grid else "%d tokens" % pos.shape[1]
    hint = "--image_size %d" % (grid[0] * p) if grid else "the checkpoint's image size"
    raise UsageError("checkpoint %s has a position embedding of shape %s (%s); %s at image size %dx%d needs %s "
                     "(%dx%d patches): pass %s, or --resize_pos_embedding to interpolate it" %
                     (path, tuple(pos.shape), made_for, config.name, image_size[0], image_size[1],
                      (1, want[0] * want[1] + 1, pos.shape[2]), want[0], want[1], hint))
  head = values.get("head/kernel")
  if head is None:
    raise UsageError("checkpoint %s has no classification head (head/kernel): nothing to classify with" % path)
  if num_classes is None:
    num_classes = int(head.shape[-1])
  elif int(head.shape[-1]) != num_classes:
    raise UsageError("checkpoint %s has a %d-class head, the model has %d classes" %
                     (path, int(head.shape[-1]), num_classes))
  representation = int(values["pre_logits/kernel"].shape[-1]) if "pre_logits/kernel" in values else None
  shapes = model.variable_shapes(config, num_classes, image_size, representation)
  try:
    fit = checkpoint_mapping.fit_to_model(values, shapes, config, image_size, keep_pre_logits=True)
  except ValueError as e:
    raise UsageError("checkpoint %s does not fit %s: %s" % (path, config.name, e))
  if fit.missing:
    raise UsageError("checkpoint %s lacks %s of %s (another variant or a partial checkpoint?)" %
                     (path, ", ".join(fit.missing[:4]), config.name))
  if class_names is not None and len(class_names) != num_classes:
    class_names = None
  fitted = {k: v.astype("float32") for k, v in fit.values.items()}
  return ModelSource(config, tuple(image_size), num_classes, class_names, path, representation, fitted, which)
