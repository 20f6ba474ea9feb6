"""Attention maps of a trained ViT: where the class token looks, drawn over the image.

  python -m tools.attention --model_dir runs/default --image digit.png [--image ...] --out maps/ \
      [--method rollout|last_layer] [--head_fusion mean|max|min] [--discard_ratio 0.9]

For each image writes, in --out:
  NAME_attention.png  the image and the map (upsampled to the image, colour heatmap) over it, side by side;
  NAME_layers.png     a grid of every layer's own class-token attention (heads fused) over the image;
  NAME_attention.npy  the map as float32 [grid rows, grid cols], summing to 1 over the patches.
The map is attention rollout (Abnar & Zuidema 2020) by default; tools/rollout.py has the formula.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

from tools import command  # noqa: E402
from tools import images as images_lib  # noqa: E402
from tools import model_source  # noqa: E402
from tools import rollout  # noqa: E402
from tools.command import UsageError  # noqa: E402

FLAGS = flags.FLAGS
model_source.define_flags()
flags.adopt_module_key_flags(model_source)  # --help lists the model-selection flags too
flags.DEFINE_multi_string("image", [], "An image file (repeat the flag for more).")
flags.DEFINE_string("out", None, "Folder for the PNGs and .npy maps (created if missing; its parent must exist).")
flags.DEFINE_bool("overwrite", False, "Replace maps already in --out.")
flags.DEFINE_enum("method", "rollout", list(rollout.METHODS), "rollout: attention rollout over all layers; last_layer: "
                  "the last layer's class-token attention.")
flags.DEFINE_enum("head_fusion", "mean", list(rollout.HEAD_FUSIONS), "How the heads of a layer are combined.")
flags.DEFINE_float(
    "discard_ratio", 0.9, "Rollout: fraction of the lowest fused attention entries of each layer set to "
    "zero before adding the identity (0 = the paper's plain rollout; 0.9 sharpens the map).")
flags.DEFINE_integer("display_size", 256, "Images are drawn with their shorter side at least this many pixels.")

_SUFFIXES = ("_attention.png", "_layers.png", "_attention.npy")


def output_names(paths, out_dir):
  """{image path: output prefix in out_dir}; repeated file names get _2, _3, ..."""
  prefixes, seen = {}, {}
  for path in paths:
    stem = os.path.splitext(os.path.basename(path))[0]
    seen[stem] = seen.get(stem, 0) + 1
    prefixes[path] = os.path.join(out_dir, stem if seen[stem] == 1 else "%s_%d" % (stem, seen[stem]))
  return prefixes


def attentions_of(source, images):
  """Per-layer attention probabilities [B, heads, T, T] and logits of uint8 `images` with the checkpoint."""
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  from tools import inference_graph  # pylint: disable=g-import-not-at-top
  graph = tf.Graph()
  with graph.as_default():
    ends = inference_graph.build(source, return_attention=True)
  with inference_graph.session(graph) as sess:
    inference_graph.load_weights(sess, source.values)
    logits, attentions = sess.run([ends.logits, ends.attentions], {ends.images: images})
  return attentions, logits


def _display(rgb, display_size):
  """The image enlarged (nearest neighbour, so pixels stay visible) until its shorter side is >= display_size."""
  h, w = rgb.shape[:2]
  factor = max(1, int(np.ceil(float(display_size) / min(h, w))))
  return cv2.resize(rgb, (w * factor, h * factor), interpolation=cv2.INTER_NEAREST) if factor > 1 else rgb


def overlay(rgb, grid_map, alpha=0.5):
  """uint8 RGB: the map (normalised to its maximum, bilinear to the image size, jet colours) blended over it."""
  h, w = rgb.shape[:2]
  heat = cv2.resize(
      grid_map.astype(np.float32) / max(float(grid_map.max()), 1e-12), (w, h), interpolation=cv2.INTER_LINEAR)
  colours = cv2.applyColorMap(np.uint8(np.clip(heat, 0, 1) * 255), cv2.COLORMAP_JET)[:, :, ::-1]
  return np.uint8(np.clip((1 - alpha) * rgb.astype(np.float32) + alpha * colours.astype(np.float32), 0, 255))


def _label(image, text):
  out = image.copy()
  scale = max(0.4, image.shape[1] / 400.0)
  cv2.putText(out, text, (4, int(18 * scale) + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 2, cv2.LINE_AA)
  cv2.putText(out, text, (4, int(18 * scale) + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
  return out


def side_by_side(tiles, columns, gap=4):
  """Tiles of one size in a grid on white, `columns` per row."""
  h, w = tiles[0].shape[:2]
  rows = (len(tiles) + columns - 1) // columns
  canvas = np.full([rows * h + (rows - 1) * gap, columns * w + (columns - 1) * gap, 3], 255, np.uint8)
  for i, tile in enumerate(tiles):
    r, c = divmod(i, columns)
    canvas[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = tile
  return canvas


def _write_png(path, rgb):
  with command.atomic_output(path) as tmp:
    ok, data = cv2.imencode(".png", rgb[:, :, ::-1])
    if not ok:
      raise OSError("cannot encode %s" % path)
    with open(tmp, "wb") as f:
      f.write(data.tobytes())


def _write_npy(path, array):
  with command.atomic_output(path) as tmp:
    with open(tmp, "wb") as f:
      np.save(f, array)


def draw(prefix, rgb, grid_map, layer_maps, caption, display_size):
  """Writes prefix + _attention.png, _layers.png and _attention.npy."""
  shown = _display(rgb, display_size)
  _write_png(prefix + "_attention.png", side_by_side([_label(shown, caption), overlay(shown, grid_map)], 2))
  tiles = [_label(overlay(shown, m), "layer %d" % i) for i, m in enumerate(layer_maps)]
  _write_png(prefix + "_layers.png", side_by_side(tiles, min(4, len(tiles))))
  _write_npy(prefix + "_attention.npy", grid_map.astype(np.float32))


def run(argv):
  if len(argv) > 1:
    raise UsageError("unexpected arguments %s; give images with --image" % " ".join(argv[1:]))
  if not FLAGS.image:
    raise UsageError("no --image given")
  if not FLAGS.out:
    raise UsageError("--out is required: a folder for the maps")
  if os.path.exists(FLAGS.out) and not os.path.isdir(FLAGS.out):
    raise UsageError("--out %s exists and is not a folder" % FLAGS.out)
  if not os.path.isdir(os.path.dirname(os.path.abspath(FLAGS.out))):
    raise UsageError("--out %s: its parent folder does not exist" % FLAGS.out)
  if not 0 <= FLAGS.discard_ratio < 1:
    raise UsageError("--discard_ratio must be in [0, 1), got %g" % FLAGS.discard_ratio)
  paths, problems = images_lib.expand(FLAGS.image)
  prefixes = output_names(paths, FLAGS.out)
  for prefix in prefixes.values():
    for suffix in _SUFFIXES:
      if os.path.exists(prefix + suffix) and not FLAGS.overwrite:
        raise UsageError("%s already exists; pass --overwrite to replace it" % (prefix + suffix))
  if not paths:
    raise UsageError("no image files: %s" % "; ".join(problems))
  for line in problems:
    sys.stderr.write("skipped %s\n" % line)
  source = model_source.from_flags()
  sys.stderr.write(model_source.describe(source) + "\n")
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  tf.logging.set_verbosity(tf.logging.ERROR)
  tf.disable_v2_behavior()
  loaded = []
  for path in paths:
    try:
      rgb = images_lib.load_rgb(path)
    except images_lib.ImageError as e:
      sys.stderr.write("skipped %s\n" % e)
      continue
    loaded.append((path, rgb, images_lib.resize_for_model(rgb, source.image_size)))
  if not loaded:
    raise UsageError("none of the images could be read")
  if not os.path.isdir(FLAGS.out):
    os.mkdir(FLAGS.out)
  p = source.config.patch_size
  grid = (source.image_size[0] // p, source.image_size[1] // p)
  attentions, logits = attentions_of(source, np.stack([item[2] for item in loaded]))
  maps = rollout.attention_map(attentions, FLAGS.method, FLAGS.head_fusion, FLAGS.discard_ratio)
  layers = rollout.per_layer(attentions, FLAGS.head_fusion)
  for i, (path, rgb, _) in enumerate(loaded):
    top = int(np.argmax(logits[i]))
    name = source.class_names[top] if source.class_names else "class %d" % top
    grid_map = maps[i].reshape(grid)
    draw(prefixes[path], rgb, grid_map, [m[i].reshape(grid) for m in layers], "predicted: %s" % name,
         FLAGS.display_size)
    peak = np.unravel_index(int(np.argmax(grid_map)), grid)
    print("%s: predicted %s; %s peak at patch row %d col %d (%.3f of the map) -> %s_attention.png, _layers.png" %
          (path, name, FLAGS.method, peak[0], peak[1], float(grid_map.max()), prefixes[path]))


if __name__ == "__main__":
  command.run_command(run)
