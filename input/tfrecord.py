"""TFRecord shards of tf.train.Example records as a dataset with random access: the official ImageNet layout and
the TFDS layout.

  layout    shards (in data_dir)                             features read                       labels
  official  train-00000-of-01024, validation-00000-of-00128  image/encoded, image/class/label,   1-based (0 is the
            (TF's imagenet_to_gcs.py / build_imagenet_data)  image/class/synset, .../text        background class)
  tfds      {name}-{split}.tfrecord-00000-of-00016           image, label; class names from      0-based
                                                             label.labels.txt or features.json

split "train" reads the train shards; any other split the asked name, then validation, val, test (first found). A
folder holding shards of both layouts (or of two TFDS names) is refused with one line naming one of each.

Labels: label = raw label + label_offset; None picks the layout's (official -1, tfds 0). num_classes: the TFDS
metadata's class count; for the official layout 1 + the largest raw label over every split + label_offset (so
label_offset 0 keeps the background class 0, the 1001 outputs of the Ascend ResNet-50). A label outside
0..num_classes-1 after the offset stops with one ValueError naming the shard and the offset to use, never a shift
in silence. Class names: the synset (else the text) of each label in the official layout, the TFDS names.

Every shard has an index (input/tfrecord_index.py, built on first use and cached); an example is read at its
offset, its CRCs checked, its Example parsed in plain Python (no TensorFlow in the workers) and its encoded image
handed to the pipeline, which decodes it as a file's (JPEG at reduced scale included). A record that fails (CRC,
truncated, not an Example, no image feature) raises image_codec.DecodeError: skipped and counted like a bad file,
named `<shard>@<offset>`.
"""
import json
import logging
import os
import re

import numpy as np

from input import filesystem, image_codec, image_headers, tfrecord_format, tfrecord_index
from input.dataset_base import Dataset, unreadable
from input.errors import DataError
from input.messages import quote

OFFICIAL, TFDS = "official", "tfds"
LAYOUTS = (OFFICIAL, TFDS)
DEFAULT_LABEL_OFFSET = {OFFICIAL: -1, TFDS: 0}
IMAGE_KEY = {OFFICIAL: "image/encoded", TFDS: "image"}
LABEL_KEY = {OFFICIAL: "image/class/label", TFDS: "label"}
NAME_KEYS = {OFFICIAL: ("image/class/synset", "image/class/text"), TFDS: ()}
EVAL_SPLITS = ("validation", "val", "test")
PROBE_RECORDS = 16
_OFFICIAL_NAME = re.compile(r"^(?P<split>[A-Za-z0-9_]+)-(?P<shard>\d+)-of-(?P<count>\d+)$")
_TFDS_NAME = re.compile(r"^(?P<name>.+)-(?P<split>[A-Za-z0-9_]+)\.tfrecord-(?P<shard>\d+)-of-(?P<count>\d+)$")
_log = logging.getLogger(__name__)


class Shards(object):
  """The shards of a folder, by layout.

  Attributes:
    layout: OFFICIAL or TFDS.
    splits: {split name: sorted shard paths}.
    tfds_name: the TFDS dataset name ("" for the official layout).
  """

  def __init__(self, layout, splits, tfds_name=""):
    self.layout = layout
    self.splits = splits
    self.tfds_name = tfds_name


def _listing(data_dir):
  """[(name, is_file)] of data_dir's entries, sorted (hidden ones left out). On a URL an entry is taken as a file
  unless the listing marks it as a folder: one stat per shard of 1,024 would cost more than the listing."""
  try:
    entries = filesystem.list_marked(data_dir)
  except OSError:
    return []
  remote = filesystem.is_url(data_dir)
  return [(n, not marked if remote else os.path.isfile(os.path.join(data_dir, n)))
          for n, marked in sorted(entries, key=lambda entry: entry[0])
          if not n.startswith(".")]


def find_shards(data_dir):
  """Shards of `data_dir`, or None when it holds none; ValueError (one line) for a folder mixing layouts."""
  official, tfds = {}, {}
  for name, is_file in _listing(data_dir):
    path = os.path.join(data_dir, name)
    m = _TFDS_NAME.match(name)
    if m:
      tfds.setdefault(m.group("name"), {}).setdefault(m.group("split"), []).append(path)
      continue
    m = _OFFICIAL_NAME.match(name)
    if m and is_file:
      official.setdefault(m.group("split"), []).append(path)
  if official and tfds:
    raise DataError("%s mixes TFRecord layouts: official ImageNet shards (%s) and TFDS shards (%s): expected one "
                    "layout per folder" %
                    (data_dir, os.path.basename(_one(official)), os.path.basename(_one(next(iter(tfds.values()))))))
  if len(tfds) > 1:
    raise DataError("%s holds the TFDS shards of %d datasets (%s): expected one dataset per folder" %
                    (data_dir, len(tfds), ", ".join(sorted(tfds))))
  if official:
    return Shards(OFFICIAL, official)
  if tfds:
    name = next(iter(tfds))
    return Shards(TFDS, tfds[name], name)
  return None


def _one(splits):
  return sorted(splits.values())[0][0]


def is_tfrecord_dir(data_dir):
  """True when `data_dir` holds TFRecord shards of either layout (a mixed folder counts: opening it says why not)."""
  try:
    return find_shards(data_dir) is not None
  except ValueError:
    return True


def _split_shards(shards, data_dir, split):
  candidates = ["train"] if split == "train" else [split] + [s for s in EVAL_SPLITS if s != split]
  for s in candidates:
    if s in shards.splits:
      paths = shards.splits[s]
      _check_complete(paths, shards.layout)
      return s, paths
  pattern = "train-*" if shards.layout == OFFICIAL else "%s-train.tfrecord-*" % shards.tfds_name
  raise DataError("%s has no %s shards for split %r (it has: %s): expected %s" %
                  (data_dir, " or ".join(candidates), split, ", ".join(sorted(
                      shards.splits)), pattern if split == "train" else pattern.replace("train", "/".join(candidates))))


def _check_complete(paths, layout):
  """Warns when the x-of-y names say shards are missing (a partial copy changes the dataset); ValueError for two
  shard counts in one split (two conversions into one folder would double the data)."""
  pattern = _OFFICIAL_NAME if layout == OFFICIAL else _TFDS_NAME
  found = [pattern.match(os.path.basename(p)) for p in paths]
  counts = {int(m.group("count")) for m in found}
  if len(counts) > 1:
    raise DataError("%s: the %s shards come in %d counts (%s): expected one set of shards per split" %
                    (os.path.dirname(paths[0]), os.path.basename(paths[0]).split("-0")[0], len(counts), ", ".join(
                        "-of-%05d" % c for c in sorted(counts))))
  numbers = {int(m.group("shard")) for m in found}
  if len(counts) == 1 and len(numbers) < next(iter(counts)):
    missing = sorted(set(range(next(iter(counts)))) - numbers)
    _log.warning("input: %s: %d of the %d shards are missing (numbers %s%s): the split is read without them",
                 os.path.dirname(paths[0]), len(missing), next(iter(counts)), ", ".join(map(str, missing[:5])),
                 ", ..." if len(missing) > 5 else "")


def tfds_class_names(data_dir):
  """The TFDS label names: label.labels.txt, else a ClassLabel in features.json (names or just a count, as names
  "0".."n-1"), else None."""
  path = os.path.join(data_dir, "label.labels.txt")
  if filesystem.isfile(path):
    text = filesystem.read_file(path).decode("utf-8")
    return [line.rstrip("\r") for line in text.split("\n") if line.strip()]
  path = os.path.join(data_dir, "features.json")
  if not filesystem.isfile(path):
    return None
  try:
    features = json.loads(filesystem.read_file(path).decode("utf-8"))
  except ValueError as e:
    raise DataError("%s is not JSON (%s): expected the TFDS features description" % (path, e))
  found = _class_label(features)
  if found is None:
    return None
  names, count = found
  return list(names) if names else [str(i) for i in range(count)]


def _class_label(node):
  """(names, count) of the first ClassLabel in a features.json tree (either TFDS spelling), or None."""
  if isinstance(node, dict):
    for key in ("classLabel", "class_label"):
      if isinstance(node.get(key), dict):
        inner = node[key]
        return inner.get("names") or [], int(inner.get("numClasses", inner.get("num_classes", 0)))
    if "ClassLabel" in str(node.get("type", node.get("pythonClassName", ""))) and isinstance(node.get("content"), dict):
      inner = node["content"]
      return inner.get("names") or [], int(inner.get("num_classes", 0))
    label = node.get("label")
    ordered = ([label] if label is not None else []) + [v for k, v in sorted(node.items()) if k != "label"]
    for value in ordered:
      found = _class_label(value)
      if found is not None:
        return found
  elif isinstance(node, list):
    for value in node:
      found = _class_label(value)
      if found is not None:
        return found
  return None


class TFRecordDataset(Dataset):
  """Examples stored as tf.train.Example records in TFRecord shards, read at their indexed offsets.

  Attributes:
    layout: OFFICIAL or TFDS.
    label_offset: added to every raw label.
    shards: the shard paths of this split.
    shard_ids: int32 [len], which shard each example is in.
    offsets: int64 [len], where its record starts in the shard.
    lengths: int64 [len], its record's data length.
    bad_records: {example: reason} of the records the index found unusable (skipped when read).
    class_texts: one human-readable text per class ("" when unknown).
    image_key: the feature that holds the encoded image.
    check_crc: whether every read checks the data's CRC (the length's is always checked).
  """

  def __init__(self, layout, split, class_names, indexes, label_offset, source, class_texts=None, check_crc=True):
    labels = np.concatenate([ix.labels for ix in indexes] or [np.zeros(0, np.int64)]) + label_offset
    super(TFRecordDataset, self).__init__("tfrecord", split, class_names, np.zeros(len(labels), np.int32), source)
    self.layout = layout
    self.label_offset = label_offset
    self.shards = [ix.path for ix in indexes]
    self.shard_ids = np.concatenate([np.full(len(ix), k, np.int32) for k, ix in enumerate(indexes)] or
                                    [np.zeros(0, np.int32)])
    self.offsets = np.concatenate([ix.offsets for ix in indexes] or [np.zeros(0, np.int64)])
    self.lengths = np.concatenate([ix.lengths for ix in indexes] or [np.zeros(0, np.int64)])
    starts = np.cumsum([0] + [len(ix) for ix in indexes])
    self.bad_records = {int(starts[k] + n): r for k, ix in enumerate(indexes) for n, r in ix.bad.items()}
    bad = np.array(sorted(self.bad_records), dtype=np.int64)
    labels[bad] = 0  # never trained: reading them raises; 0 keeps the array in range
    self.labels = labels.astype(np.int32)
    self.class_texts = list(class_texts or [""] * self.num_classes)
    self.image_key = IMAGE_KEY[layout]
    self.check_crc = check_crc

  def describe(self, i):
    return "%s@%d" % (self.shards[self.shard_ids[i]], self.offsets[i])

  def read_encoded(self, i):
    """The encoded image of example i; image_codec.DecodeError for a record that cannot be used."""
    where = self.describe(i)
    if i in self.bad_records:
      raise image_codec.DecodeError(where, self.bad_records[i])
    try:
      with filesystem.open_read(self.shards[self.shard_ids[i]]) as f:
        data = tfrecord_format.read_record(f, int(self.offsets[i]), int(self.lengths[i]), self.check_crc)
      features = tfrecord_format.parse_example(data, (self.image_key,))
    except OSError as e:
      raise image_codec.DecodeError(where, "cannot read the shard (%s)" % (e.strerror or e))
    except tfrecord_format.RecordError as e:
      raise image_codec.DecodeError(where, e.reason)
    values = features.get(self.image_key)
    if not values or not isinstance(values[0], bytes):
      present = sorted(tfrecord_format.parse_example(data))
      raise image_codec.DecodeError(
          where, "no %r bytes feature in the record (it has: %s)" % (self.image_key, ", ".join(present) or "nothing"))
    if not values[0]:
      raise image_codec.DecodeError(where, "%r is empty" % self.image_key)
    return values[0]

  def read(self, i):
    return image_codec.decode_rgb(self.read_encoded(i), self.describe(i))


def _check_labels(indexes, layout, label_offset, num_classes, source):
  """One-line ValueError for a usable record whose label + label_offset is outside 0..num_classes-1."""
  for ix in indexes:
    good = np.ones(len(ix), bool)
    good[list(ix.bad)] = False
    if not good.any():
      continue
    labels = ix.labels[good]
    for raw in (labels.min(), labels.max()):
      label = int(raw) + label_offset
      if 0 <= label < num_classes:
        continue
      where = int(ix.offsets[good][np.flatnonzero(labels == raw)[0]])
      hint = ""
      if layout == OFFICIAL and raw == 0 and label_offset == -1:
        hint = ("; the official layout's labels are 1-based (0 is the background class), these look 0-based: "
                "pass --label_offset 0 if so")
      elif layout == TFDS and label >= num_classes:
        hint = "; TFDS labels are 0-based (--label_offset 0)"
      raise DataError("%s@%d: label %d + label_offset %d = %d is outside 0..%d (%d classes%s)%s" %
                      (ix.path, where, raw, label_offset, label, num_classes - 1, num_classes, source, hint))


def _check_shard(ix, keys):
  """One-line ValueError for a shard none of whose records has the layout's label: the wrong layout's keys."""
  if len(ix) and len(ix.bad) == len(ix) and ix.keys_seen and keys.label not in ix.keys_seen:
    raise DataError("%s: no record has a %r feature (the first has: %s): expected the %s layout's features" %
                    (ix.path, keys.label, ", ".join(ix.keys_seen), keys.layout))
  for label, known, found, offset in ix.conflicts[:1]:
    raise DataError("%s@%d: label %d is named %s here but %s earlier in the shard: one label, one class expected" %
                    (ix.path, offset, label, found, known))


def _index_all(shards, keys, index_dir):
  out = {}
  for split, paths in sorted(shards.splits.items()):
    out[split] = []
    for path in paths:
      ix = tfrecord_index.shard_index(path, keys, index_dir)
      _check_shard(ix, keys)
      out[split].append(ix)
  return out


def _official_classes(all_indexes, label_offset):
  """(class names, texts) of the official layout, from the largest raw label and the synset/text features."""
  names, owner, largest = {}, {}, None
  for ix in all_indexes:
    good = np.ones(len(ix), bool)
    good[list(ix.bad)] = False
    if good.any():
      largest = max(largest or 0, int(ix.labels[good].max()))
    for label, pair in ix.names.items():
      if label in names and names[label] != pair:
        raise DataError("label %d is %s in %s but %s in %s: one label, one class expected (shards of two "
                        "labelings in one folder?)" % (label, pair, ix.path, names[label], owner[label]))
      names.setdefault(label, pair)
      owner.setdefault(label, ix.path)
  count = 0 if largest is None else largest + 1 + label_offset
  class_names, texts = [], []
  for c in range(max(count, 0)):
    synset, text = (names.get(c - label_offset) or [None, None])
    fallback = "background" if c - label_offset == 0 else str(c)
    class_names.append(synset or text or fallback)
    texts.append(text or "")
  return class_names, texts


def probe_records(dataset, count=PROBE_RECORDS):
  """UnreadableDatasetError when none of up to `count` records spread over the dataset holds something that starts
  like a JPEG, PNG, BMP or WebP."""
  if not len(dataset):
    return
  picks = sorted(set(np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int)))
  failures = []
  for i in picks:
    try:
      head = dataset.read_encoded(int(i))[:64]
    except image_codec.DecodeError as e:
      failures.append((e.path, e.reason))
      continue
    if image_headers.sniff(head) is not None:
      return
    failures.append((dataset.describe(int(i)), image_headers.describe_unknown(head)))
  raise unreadable(dataset, "none of the %d records checked (spread over all %d)" % (len(picks), len(dataset)),
                   failures)


def load_tfrecords(data_dir, split, label_offset=None, index_dir=None, check_crc=True):
  """The TFRecordDataset of `split` in `data_dir` (see the module docstring).

  label_offset: added to the raw labels; None = the layout's (official -1, tfds 0). index_dir: the cache folder for
  indexes that cannot be saved beside their shards (None: tfrecord_index.cache_folder()). check_crc: False skips the
  data CRC on reads (the index build checks every record once anyway).
  """
  shards = find_shards(data_dir)
  if shards is None:
    raise DataError("%s holds no TFRecord shards: expected train-00000-of-NNNNN ... (official ImageNet) or "
                    "<name>-train.tfrecord-00000-of-NNNNN ... (TFDS)" % data_dir)
  if label_offset is None:
    label_offset = DEFAULT_LABEL_OFFSET[shards.layout]
  if isinstance(label_offset, bool) or not isinstance(label_offset, (int, np.integer)):
    raise DataError("label_offset must be an integer, got %r" % (label_offset,))
  label_offset = int(label_offset)
  split_name, _ = _split_shards(shards, data_dir, split)
  keys = tfrecord_index.Keys(shards.layout, LABEL_KEY[shards.layout], NAME_KEYS[shards.layout])
  by_split = _index_all(shards, keys, index_dir)
  everything = [ix for s in sorted(by_split) for ix in by_split[s]]
  texts = None
  if shards.layout == OFFICIAL:
    class_names, texts = _official_classes(everything, label_offset)
    source = " (1 + the largest label %s)" % ("- 1" if label_offset == -1 else "%+d" % label_offset)
  else:
    class_names = tfds_class_names(data_dir)
    source = " (the TFDS metadata)"
    if class_names is None:
      good = [ix.labels[[n for n in range(len(ix)) if n not in ix.bad]] for ix in everything]
      largest = max([int(g.max()) for g in good if len(g)] or [-1])
      class_names = [str(c) for c in range(max(largest + 1 + label_offset, 0))]
      source = " (1 + the largest label: no label.labels.txt or features.json)"
      _log.warning(
          "input: %s has neither label.labels.txt nor a ClassLabel in features.json: %d classes from the "
          "largest label, named by number", data_dir, len(class_names))
  _check_labels(everything, shards.layout, label_offset, len(class_names), source)
  dataset = TFRecordDataset(shards.layout, split, class_names, by_split[split_name], label_offset, data_dir, texts,
                            check_crc)
  if not len(dataset):
    raise DataError("%s: the %s shards hold no record" % (data_dir, split_name))
  probe_records(dataset)
  return dataset
