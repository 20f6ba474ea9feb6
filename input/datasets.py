"""open_dataset: one entry point for every reader, and the rules that map (name, data_dir, split) to files.

  name          data_dir holds                                split -> what is read
  digits        (nothing: bundled with scikit-learn)          train / anything else = fixed 80/20 stratified split
  cifar10       data_batch_1..5, test_batch, batches.meta     train -> data_batch_1..5, else test_batch
  cifar100      train, test, meta                             train -> train, else test
  imagefolder   train/ and val/ (or validation/ or test/)      train -> train/, else val/, validation/, test/
                sub-trees, or directly the class folders      (first that exists); a folder that itself holds
                                                              the class folders is used as-is for the split asked
  list          train.txt, val.txt (or test.txt), or          train -> train.txt, else val.txt, validation.txt,
                data_dir is itself a .txt list file           test.txt; a .txt data_dir is used as-is
  idx           train-images-idx3-ubyte[.gz], train-labels-   train -> train-*, else t10k-* (input/idx.py)
                idx1-ubyte[.gz], t10k-* (the MNIST family)
  tfrecord      train-NNNNN-of-NNNNN, validation-... (official  train -> train shards, else the asked name, then
                ImageNet) or <name>-<split>.tfrecord-NNNNN-   validation, val, test shards; label_offset: None =
                of-NNNNN (TFDS); see input/tfrecord.py        the layout's (official -1, tfds 0)
  auto          any of the above, recognised from its files;  data_dir=None -> digits

data_dir may be a URL (gs://, ram://, ...: input/filesystem.py): every reader lists and reads through tf.io.gfile
then; a file:// URL is its plain path. A URL whose scheme this TensorFlow cannot read is one DataError naming the
scheme and what to install.

Every path problem is a ValueError with one line that names the path and what was expected (an OSError while
opening, such as an unreadable folder, too). A dataset of image files whose sampled files are all unreadable (Git LFS
pointers, say) is an UnreadableDatasetError (a ValueError) here already, before any training. Warnings go to the
logger input.datasets: a training split with a single class, or with classes that have no example.
"""
import logging
import os

import numpy as np

from input import cifar, digits, filesystem, idx, image_codec, image_folder, image_headers, list_file, tfrecord
from input import tfrecord_index
from input.dataset_base import FileDataset, unreadable
from input.messages import quote
from input.errors import DataError

DATASET_NAMES = ("digits", "auto", "cifar10", "cifar100", "imagefolder", "list", "idx", "tfrecord")
EVAL_SPLIT_NAMES = ("val", "validation", "test")
PROBE_FILES = 16
_log = logging.getLogger(__name__)
_EXPECTED = ("a CIFAR-10/100 python-pickle folder, an MNIST-family IDX folder (train-images-idx3-ubyte[.gz], ...), "
             "an ImageFolder tree (class sub-folders, or train/ and val/ holding them), a list file (train.txt / "
             "val.txt of 'path label' lines) or TFRecord shards (official ImageNet or TFDS names)")


def _split_candidates(split):
  if split == "train":
    return ["train"]
  ordered = [split] + [s for s in EVAL_SPLIT_NAMES if s != split]
  return ordered


def _check_dir(data_dir):
  if data_dir is None:
    raise DataError("no data_dir given: expected %s" % _EXPECTED)
  if filesystem.is_url(data_dir):
    filesystem.check_url(data_dir)
  try:
    filesystem.stat(data_dir)
  except FileNotFoundError:
    raise DataError("%s does not exist: expected %s" % (data_dir, _EXPECTED))
  if filesystem.isdir(data_dir) and not filesystem.listdir(data_dir):
    raise DataError("%s is empty: expected %s" % (data_dir, _EXPECTED))


def _image_folder(data_dir, split, cache_dir):
  sub = [s for s in _split_candidates(split) if image_folder.class_folders(os.path.join(data_dir, s))]
  has_split_dirs = any(filesystem.isdir(os.path.join(data_dir, s)) for s in ["train"] + list(EVAL_SPLIT_NAMES))
  if not sub:
    if has_split_dirs:
      raise DataError("%s has no %s folder with class sub-folders for split %r" %
                      (data_dir, "/ or ".join(_split_candidates(split)) + "/", split))
    return image_folder.load_image_folder(data_dir, split, cache_dir=cache_dir)
  class_names = None
  train_root = os.path.join(data_dir, "train")
  if split != "train" and image_folder.class_folders(train_root):
    class_names = image_folder.class_folders(train_root)  # eval labels must use the training label ids
  return image_folder.load_image_folder(os.path.join(data_dir, sub[0]), split, class_names, cache_dir)


def _list_file(data_dir, split):
  if filesystem.isfile(data_dir):
    return list_file.load_list_file(data_dir, split)
  for s in _split_candidates(split):
    path = os.path.join(data_dir, s + ".txt")
    if filesystem.isfile(path):
      return list_file.load_list_file(path, split)
  raise DataError("%s has no %s for split %r: expected a list file of 'relative/path label' lines" %
                  (data_dir, " or ".join(s + ".txt" for s in _split_candidates(split)), split))


def detect(data_dir):
  """The reader name for what `data_dir` holds: "cifar10", "cifar100", "idx", "list", "tfrecord" or "imagefolder"."""
  _check_dir(data_dir)
  if filesystem.isfile(data_dir):
    if data_dir.lower().endswith(".txt"):
      return "list"
    raise DataError("%s is a file but not a .txt list file: expected %s" % (data_dir, _EXPECTED))
  if cifar.is_cifar10_dir(data_dir):
    return "cifar10"
  if cifar.is_cifar100_dir(data_dir):
    return "cifar100"
  if idx.is_idx_dir(data_dir):
    return "idx"
  if any(filesystem.isfile(os.path.join(data_dir, s + ".txt")) for s in ["train"] + list(EVAL_SPLIT_NAMES)):
    return "list"
  if tfrecord.is_tfrecord_dir(data_dir):
    return "tfrecord"
  roots = [data_dir] + [os.path.join(data_dir, s) for s in ["train"] + list(EVAL_SPLIT_NAMES)]
  if any(image_folder.class_folders(r) for r in roots):
    return "imagefolder"
  raise DataError("%s holds neither CIFAR pickles, IDX files, list files, TFRecord shards nor class folders: "
                  "expected %s" % (data_dir, _EXPECTED))


def probe_files(dataset, count=PROBE_FILES):
  """Raises UnreadableDatasetError when none of up to `count` files spread evenly over a FileDataset starts like a
  JPEG, PNG, BMP or WebP regular file (only the first bytes of each are read)."""
  picks = sorted(set(np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int)))
  failures = []
  for i in picks:
    path = dataset.paths[i]
    try:
      head = image_codec.read_bytes(path, limit=64)
    except image_codec.DecodeError as e:
      failures.append((path, e.reason))
      continue
    if image_headers.sniff(head) is not None:
      return
    failures.append((path, image_headers.describe_unknown(head)))
  raise unreadable(dataset, "none of the %d files checked (spread over all %d)" % (len(picks), len(dataset)), failures)


def _check_classes(dataset):
  """Warns about a training split that cannot teach a classifier much: one class, or classes without examples."""
  names = dataset.class_names
  if dataset.num_classes < 2:
    _log.warning(
        "input: %s has %d class (%s): a classifier learns nothing from it (its loss goes to 0); expected "
        "2 or more classes", dataset.title(), dataset.num_classes, ", ".join(quote(n) for n in names))
    return
  counts = np.bincount(dataset.labels, minlength=dataset.num_classes)
  empty = [names[i] for i in np.flatnonzero(counts == 0)]
  if empty:
    _log.warning("input: %s: %d of its %d classes have no example (%s%s)", dataset.title(), len(empty),
                 dataset.num_classes, ", ".join(quote(n) for n in empty[:5]), ", ..." if len(empty) > 5 else "")


def _open(name, data_dir, split, label_offset, cache_dir):
  if name == "auto":
    name = detect(data_dir)
  else:
    _check_dir(data_dir)
  if name == "tfrecord":
    index_dir = tfrecord_index.cache_folder(cache_dir) if cache_dir else None
    return tfrecord.load_tfrecords(data_dir, split, label_offset, index_dir)
  if label_offset not in (None, 0):
    raise DataError("label_offset %r applies to TFRecord shards only, %s is read as %s (labels 0-based)" %
                    (label_offset, data_dir, name))
  if name == "cifar10":
    return cifar.load_cifar10(data_dir, split)
  if name == "cifar100":
    return cifar.load_cifar100(data_dir, split)
  if name == "list":
    return _list_file(data_dir, split)
  if name == "idx":
    return idx.load_idx(data_dir, split)
  return _image_folder(data_dir, split, cache_dir)


def open_dataset(name="auto", data_dir=None, split="train", label_offset=None, cache_dir=None):
  """Opens a dataset (see the module table) and returns a dataset_base.Dataset.

  data_dir: a local path or a URL (input/filesystem.py). label_offset: added to the raw labels of TFRecord shards
  (None = the layout's); other datasets accept only None or 0. cache_dir: the base folder of the TFRecord index
  and ImageFolder listing caches (None: $XDG_CACHE_HOME, else ~/.cache).

  Raises ValueError with one line naming the path (or name) and what was expected; its subclass
  UnreadableDatasetError when a dataset of image files has nothing that looks like an image.
  """
  name = (name or "auto").lower()
  if name not in DATASET_NAMES:
    raise DataError("unknown dataset %r: expected one of %s" % (name, ", ".join(DATASET_NAMES)))
  if name == "digits" or (name == "auto" and data_dir is None):
    if label_offset not in (None, 0):
      raise DataError("label_offset %r applies to TFRecord shards only, the embedded digits' labels are 0-based" %
                      (label_offset,))
    return digits.load_digits(split)
  data_dir = filesystem.to_local(data_dir)
  try:
    dataset = _open(name, data_dir, split, label_offset, cache_dir)
    if isinstance(dataset, FileDataset):
      probe_files(dataset)
  except OSError as e:  # e.g. a folder or list without read permission
    raise DataError("%s: cannot read it (%s): expected a readable dataset folder or list file" %
                    (quote(e.filename or data_dir), e.strerror or e))
  if split == "train":
    _check_classes(dataset)
  return dataset
