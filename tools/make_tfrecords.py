"""Converts an ImageFolder tree, a list file or a CIFAR folder into sharded TFRecords the trainer reads.

  python -m tools.make_tfrecords --data_dir SRC --output_dir DST [--layout official|tfds] [--num_shards N]

Every split of --splits (default train,validation; an evaluation split the source does not have separately is left
out) becomes shards named as the layout names them (input/tfrecord.py): official `train-00000-of-00004` with
image/encoded, image/format, image/class/label (1-based), image/class/synset and image/class/text (the class name),
image/height, image/width, image/filename; tfds `<name>-train.tfrecord-00000-of-00004` with image, label (0-based)
and file_name, plus label.labels.txt and features.json. Files are copied byte for byte (no re-encoding); images held
as arrays (CIFAR, digits) are encoded as PNG. Example i of the source is record i of the split, shard after shard,
so the TFRecords list the examples in the source's order. A shard is written under a hidden temporary name and
renamed when complete, then indexed; a rerun keeps the shards already there (checking their record counts) and
writes only the missing ones. Progress (examples, img/s, ETA) goes to stdout.
"""
import json
import os
import sys
import time

from absl import flags

from input.errors import DataError
from tools import command
from tools.command import UsageError

FLAGS = flags.FLAGS


def define_flags():
  """The command's flags, defined only when it runs: --data_dir and --dataset are also the trainer's, and tests
  import both into one process."""
  flags.DEFINE_string(
      "data_dir", None, "The source: an ImageFolder tree, a list file (or folder of lists) or a CIFAR "
      "folder, as --data_dir of the trainer.")
  flags.DEFINE_string("dataset", "auto", "How to read --data_dir (the trainer's --dataset names).")
  flags.DEFINE_string("output_dir", None, "Where the shards go (created if missing).")
  flags.DEFINE_enum(
      "layout", "official", ["official", "tfds"], "official: TF's ImageNet TFRecords (1-based labels); "
      "tfds: TensorFlow Datasets' shards (0-based labels, class names in label.labels.txt).")
  flags.DEFINE_list("splits", ["train", "validation"], "Splits to convert, by the names the shards get.")
  flags.DEFINE_integer("num_shards", 0, "Shards per split; 0: ceil(examples / --examples_per_shard).")
  flags.DEFINE_integer(
      "examples_per_shard", 1250, "Examples per shard when --num_shards is 0 (ImageNet's 1,281,167 "
      "train images in 1,024 shards are 1,251 a shard).")
  flags.DEFINE_string("name", None, "The TFDS dataset name in the shard names (tfds layout); default: from --data_dir.")


def shard_names(layout, split, count, name=""):
  """The file names of `count` shards of `split`."""
  if layout == "official":
    return ["%s-%05d-of-%05d" % (split, k, count) for k in range(count)]
  return ["%s-%s.tfrecord-%05d-of-%05d" % (name, split, k, count) for k in range(count)]


def _listing(output_dir, layout, split, name):
  """Names of the shards of `split` already in output_dir, whatever their count."""
  from input import tfrecord  # pylint: disable=g-import-not-at-top
  found = tfrecord.find_shards(output_dir)
  if found is None or found.layout != layout or (layout == "tfds" and found.tfds_name != name):
    return []
  return [os.path.basename(p) for p in found.splits.get(split, [])]


def _encoded(dataset, i):
  """(bytes, format name, height, width, file name) of example i: a file's own bytes, an array as PNG."""
  import cv2  # pylint: disable=g-import-not-at-top
  from input import image_codec, image_headers  # pylint: disable=g-import-not-at-top
  if hasattr(dataset, "read_encoded"):
    data = dataset.read_encoded(i)
    header = image_codec.check_header(data, dataset.describe(i), max_pixels=None)
    return data, header.format.upper(), header.height, header.width, os.path.basename(dataset.describe(i))
  image = dataset.read(i)
  ok, data = cv2.imencode(".png", image[..., ::-1])
  if not ok:
    raise DataError("%s: cannot encode it as PNG" % dataset.describe(i))
  return data.tobytes(), "PNG", image.shape[0], image.shape[1], "%s_%s_%d.png" % (dataset.name, dataset.split, i)


def _example(dataset, i, layout):
  from input import tfrecord_format  # pylint: disable=g-import-not-at-top
  data, fmt, height, width, file_name = _encoded(dataset, i)
  label = dataset.label(i)
  if layout == "official":
    name = dataset.class_names[label]
    return tfrecord_format.encode_example({
        "image/encoded": data,
        "image/format": fmt,
        "image/class/label": label + 1,
        "image/class/synset": name,
        "image/class/text": name,
        "image/height": height,
        "image/width": width,
        "image/channels": 3,
        "image/colorspace": "RGB",
        "image/filename": file_name,
    })
  return tfrecord_format.encode_example({"image": data, "label": label, "file_name": file_name})


class Progress(object):
  """Prints examples done, img/s and the time left, at most every `every` seconds."""

  def __init__(self, total, every=5.0, out=sys.stdout):
    self.total, self.every, self.out = total, every, out
    self.start = self.last = time.time()
    self.done = self.skipped = 0

  def update(self, done, force=False):
    self.done = done
    now = time.time()
    if not force and now - self.last < self.every:
      return
    self.last = now
    rate = (self.done - self.skipped) / max(now - self.start, 1e-9)
    left = (self.total - self.done) / rate if rate > 0 else float("nan")
    self.out.write("%d/%d examples, %.0f img/s, ETA %s\n" % (self.done, self.total, rate, _duration(left)))
    self.out.flush()


def _duration(seconds):
  if seconds != seconds:
    return "?"
  seconds = int(round(seconds))
  return "%dh%02dm" % (seconds // 3600, seconds // 60 % 60) if seconds >= 3600 else "%dm%02ds" % (seconds // 60,
                                                                                                  seconds % 60)


def write_split(dataset, output_dir, layout, split, num_shards, name, keys, out=sys.stdout):
  """Writes the shards of one split (skipping complete ones) and indexes them; returns their paths."""
  from input import tfrecord_format, tfrecord_index  # pylint: disable=g-import-not-at-top
  n = len(dataset)
  names = shard_names(layout, split, num_shards, name)
  bounds = [n * k // num_shards for k in range(num_shards + 1)]
  progress = Progress(n, out=out)
  paths = []
  others = sorted(set(_listing(output_dir, layout, split, name)) - set(names))
  if others:
    raise UsageError("%s already holds %s shards of another count (%s): remove them or pass their --num_shards" %
                     (output_dir, split, others[0]))
  for k, shard in enumerate(names):
    path = os.path.join(output_dir, shard)
    paths.append(path)
    expected = bounds[k + 1] - bounds[k]
    if os.path.exists(path):
      have = len(tfrecord_index.shard_index(path, keys))
      if have != expected:
        raise UsageError("%s exists with %d records, this conversion puts %d there: remove it (or pass the "
                         "--num_shards it was written with)" % (path, have, expected))
      progress.skipped += expected
      progress.update(bounds[k + 1])
      continue
    with command.atomic_output(path) as tmp:
      with open(tmp, "wb") as f:
        for i in range(bounds[k], bounds[k + 1]):
          f.write(tfrecord_format.frame(_example(dataset, i, layout)))
          progress.update(i + 1)
    tfrecord_index.shard_index(path, keys)
  progress.update(n, force=True)
  return paths


def _tfds_metadata(output_dir, class_names):
  with command.atomic_output(os.path.join(output_dir, "label.labels.txt")) as tmp:
    with open(tmp, "w", encoding="utf-8") as f:
      f.write("".join(c + "\n" for c in class_names))
  features = {
      "pythonClassName": "tensorflow_datasets.core.features.features_dict.FeaturesDict",
      "featuresDict": {
          "features": {
              "image": {
                  "pythonClassName": "tensorflow_datasets.core.features.image_feature.Image",
                  "image": {
                      "shape": {
                          "dimensions": ["-1", "-1", "3"]
                      },
                      "dtype": "uint8"
                  }
              },
              "label": {
                  "pythonClassName": "tensorflow_datasets.core.features.class_label_feature.ClassLabel",
                  "classLabel": {
                      "numClasses": str(len(class_names))
                  }
              },
              "file_name": {
                  "pythonClassName": "tensorflow_datasets.core.features.text_feature.Text",
                  "text": {}
              },
          }
      }
  }
  with command.atomic_output(os.path.join(output_dir, "features.json")) as tmp:
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump(features, f, indent=2)


def convert(data_dir, output_dir, layout="official", splits=("train", "validation"), num_shards=0,
            examples_per_shard=1250, name=None, dataset="auto", out=sys.stdout):
  """Converts every split of `splits` (see the module docstring); returns {split: shard paths}."""
  from input import datasets, tfrecord, tfrecord_index  # pylint: disable=g-import-not-at-top
  if not data_dir or not output_dir:
    raise UsageError("--data_dir and --output_dir are required")
  if os.path.abspath(data_dir) == os.path.abspath(output_dir):
    raise UsageError("--output_dir %s is --data_dir: expected another folder" % output_dir)
  if num_shards < 0 or examples_per_shard < 1:
    raise UsageError("--num_shards must be >= 0 and --examples_per_shard >= 1")
  name = name or "".join(
      c if c.isalnum() or c == "_" else "_" for c in os.path.basename(os.path.abspath(data_dir)).lower()) or "dataset"
  keys = tfrecord_index.Keys(layout, tfrecord.LABEL_KEY[layout], tfrecord.NAME_KEYS[layout])
  opened = []
  for split in splits:
    ds = datasets.open_dataset(dataset, data_dir, split)
    same = opened and getattr(ds, "paths", None) is not None and ds.paths == getattr(opened[0][1], "paths", None)
    if split != "train" and same:  # a folder of class folders serves every split: it is converted once
      out.write("%s: %s has no separate %s split: not converted\n" % (split, data_dir, split))
      continue
    opened.append((split, ds))
  if not os.path.isdir(output_dir):
    os.makedirs(output_dir)
  written = {}
  for split, ds in opened:
    count = num_shards or max(1, -(-len(ds) // examples_per_shard))
    out.write("%s: %d examples of %s into %d shards in %s\n" % (split, len(ds), ds.title(), count, output_dir))
    written[split] = write_split(ds, output_dir, layout, split, count, name, keys, out)
  if layout == "tfds":
    _tfds_metadata(output_dir, opened[0][1].class_names)
  return written


def run(argv):
  if len(argv) > 1:
    raise UsageError("unexpected arguments: %s" % " ".join(argv[1:]))
  convert(FLAGS.data_dir, FLAGS.output_dir, FLAGS.layout, FLAGS.splits, FLAGS.num_shards, FLAGS.examples_per_shard,
          FLAGS.name, FLAGS.dataset)


if __name__ == "__main__":
  define_flags()
  command.run_command(run)
