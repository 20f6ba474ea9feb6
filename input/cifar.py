"""CIFAR-10 / CIFAR-100 from the python-pickle release (cifar-10-batches-py/, cifar-100-python/).

Split -> file: CIFAR-10 "train" reads data_batch_1..5, any other split ("test", "val", "eval") reads test_batch;
CIFAR-100 "train" reads train, any other split reads test (fine labels, 100 classes). Class names come from
batches.meta / meta. Every file goes through safe_pickle, so a dataset can never run code. Keys may be bytes (the
Python 2 release) or str (files re-pickled by Python 3). Checked when the dataset opens, each a ValueError naming
the file: data of shape [N, 3072] with values 0..255, exactly one integer label per row, every label in
0..num_classes-1.
"""
import os

import numpy as np

from input import filesystem, safe_pickle
from input.dataset_base import ArrayDataset
from input.errors import DataError

CIFAR10_TRAIN_FILES = ["data_batch_%d" % i for i in range(1, 6)]


def is_cifar10_dir(data_dir):
  return filesystem.isfile(os.path.join(
      data_dir, "data_batch_1")) or (filesystem.isfile(os.path.join(data_dir, "batches.meta")) and
                                     filesystem.isfile(os.path.join(data_dir, "test_batch")))


def is_cifar100_dir(data_dir):
  return filesystem.isfile(os.path.join(data_dir, "meta")) and (filesystem.isfile(os.path.join(data_dir, "train")) or
                                                                filesystem.isfile(os.path.join(data_dir, "test")))


def _field(batch, key, path):
  """batch[key] for a bytes key, or its str spelling."""
  if isinstance(batch, dict):
    for spelling in (key, key.decode()):
      if spelling in batch:
        return batch[spelling]
  raise DataError("%s: expected a CIFAR batch dict with key %r" % (path, key.decode()))


def _images(data, path):
  data = np.asarray(data)
  if data.ndim != 2 or data.shape[1] != 3072:
    raise DataError("%s: expected CIFAR data of shape [N, 3072], got %s" % (path, data.shape))
  if data.dtype != np.uint8:
    if data.dtype.kind not in "iu" or (data.size and (data.min() < 0 or data.max() > 255)):
      raise DataError("%s: expected CIFAR pixel values 0..255 (uint8), got %s data%s" %
                      (path, data.dtype, " from %d to %d" % (data.min(), data.max()) if data.size else ""))
    data = data.astype(np.uint8)
  # Stored as planes: 1024 red, 1024 green, 1024 blue values per row.
  return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _labels(values, count, num_classes, path, key):
  """The int32 labels of one file, checked against its image count and the class count."""
  labels = np.asarray(values)
  if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
    raise DataError("%s: expected %r to be a list of integer labels, got %s of shape %s" %
                    (path, key.decode(), labels.dtype, labels.shape))
  if len(labels) != count:
    raise DataError("%s: %d labels for %d images: expected one label per image" % (path, len(labels), count))
  bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
  if len(bad):
    raise DataError("%s: label %d of image %d is outside 0..%d (%d classes)%s" %
                    (path, labels[bad[0]], bad[0], num_classes - 1, num_classes, ", and %d more labels are" %
                     (len(bad) - 1) if len(bad) > 1 else ""))
  return labels.astype(np.int32)


def _read_batch(path, label_key, num_classes):
  batch = safe_pickle.load(path)
  images = _images(_field(batch, b"data", path), path)
  labels = _labels(_field(batch, label_key, path), len(images), num_classes, path, label_key)
  return images, labels


def _names(meta_path, key, count):
  if not filesystem.isfile(meta_path):
    return [str(i) for i in range(count)]
  names = _field(safe_pickle.load(meta_path), key, meta_path)
  if not isinstance(names, (list, tuple)) or not names:
    raise DataError("%s: expected %r to be a non-empty list of class names" % (meta_path, key.decode()))
  return [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names]


def _require(path):
  if not filesystem.isfile(path):
    raise DataError("%s does not exist: expected a CIFAR python-pickle file there" % path)
  return path


def load_cifar10(data_dir, split="train"):
  files = CIFAR10_TRAIN_FILES if split == "train" else ["test_batch"]
  names = _names(os.path.join(data_dir, "batches.meta"), b"label_names", 10)
  images, labels = [], []
  for name in files:
    batch_images, batch_labels = _read_batch(_require(os.path.join(data_dir, name)), b"labels", len(names))
    images.append(batch_images)
    labels.append(batch_labels)
  return ArrayDataset("cifar10", split, names, np.concatenate(images), np.concatenate(labels), source=data_dir)


def load_cifar100(data_dir, split="train"):
  path = _require(os.path.join(data_dir, "train" if split == "train" else "test"))
  names = _names(os.path.join(data_dir, "meta"), b"fine_label_names", 100)
  images, labels = _read_batch(path, b"fine_labels", len(names))
  return ArrayDataset("cifar100", split, names, images, labels, source=data_dir)
