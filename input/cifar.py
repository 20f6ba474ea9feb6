"""CIFAR-10 / CIFAR-100 from the python-pickle release (cifar-10-batches-py/, cifar-100-python/).

Split -> file: CIFAR-10 "train" reads data_batch_1..5, any other split ("test", "val", "eval") reads test_batch;
CIFAR-100 "train" reads train, any other split reads test (fine labels, 100 classes). Class names come from
batches.meta / meta. Every file goes through safe_pickle, so a dataset can never run code.
"""
import os

import numpy as np

from input import safe_pickle
from input.dataset_base import ArrayDataset

CIFAR10_TRAIN_FILES = ["data_batch_%d" % i for i in range(1, 6)]


def is_cifar10_dir(data_dir):
  return os.path.isfile(os.path.join(data_dir,
                                     "data_batch_1")) or (os.path.isfile(os.path.join(data_dir, "batches.meta")) and
                                                          os.path.isfile(os.path.join(data_dir, "test_batch")))


def is_cifar100_dir(data_dir):
  return os.path.isfile(os.path.join(data_dir, "meta")) and (os.path.isfile(os.path.join(data_dir, "train")) or
                                                             os.path.isfile(os.path.join(data_dir, "test")))


def _field(batch, key, path):
  if not isinstance(batch, dict) or key not in batch:
    raise ValueError("%s: expected a CIFAR batch dict with key %r" % (path, key.decode()))
  return batch[key]


def _images(data, path):
  data = np.asarray(data, dtype=np.uint8)
  if data.ndim != 2 or data.shape[1] != 3072:
    raise ValueError("%s: expected CIFAR data of shape [N, 3072], got %s" % (path, data.shape))
  # Stored as planes: 1024 red, 1024 green, 1024 blue values per row.
  return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def _names(meta_path, key, count):
  if not os.path.isfile(meta_path):
    return [str(i) for i in range(count)]
  names = _field(safe_pickle.load(meta_path), key, meta_path)
  return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


def _require(path):
  if not os.path.isfile(path):
    raise ValueError("%s does not exist: expected a CIFAR python-pickle file there" % path)
  return path


def load_cifar10(data_dir, split="train"):
  files = CIFAR10_TRAIN_FILES if split == "train" else ["test_batch"]
  images, labels = [], []
  for name in files:
    path = _require(os.path.join(data_dir, name))
    batch = safe_pickle.load(path)
    images.append(_images(_field(batch, b"data", path), path))
    labels.append(np.asarray(_field(batch, b"labels", path), dtype=np.int32))
  names = _names(os.path.join(data_dir, "batches.meta"), b"label_names", 10)
  return ArrayDataset("cifar10", split, names, np.concatenate(images), np.concatenate(labels))


def load_cifar100(data_dir, split="train"):
  path = _require(os.path.join(data_dir, "train" if split == "train" else "test"))
  batch = safe_pickle.load(path)
  images = _images(_field(batch, b"data", path), path)
  labels = np.asarray(_field(batch, b"fine_labels", path), dtype=np.int32)
  names = _names(os.path.join(data_dir, "meta"), b"fine_label_names", 100)
  return ArrayDataset("cifar100", split, names, images, labels)
