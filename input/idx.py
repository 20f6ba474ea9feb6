"""The MNIST family's IDX files (MNIST, Fashion-MNIST, KMNIST, EMNIST): images and labels as arrays in memory.

A folder holds train-images-idx3-ubyte / train-labels-idx1-ubyte (split "train") and t10k-images-idx3-ubyte /
t10k-labels-idx1-ubyte (any other split), each plain or .gz (read straight from the gzip stream). Checked when the
dataset opens, each a ValueError with one line naming the file: the magic number (0x00000803: uint8 images of 3
dimensions; 0x00000801: uint8 labels of 1), a body of exactly the size the header declares (a truncated or
over-long file says how many bytes it has and needs), as many labels as images, every label below the class count.
Classes: one name per line of class_names.txt beside the files when there is one; Fashion-MNIST's ten names when
the folder is recognised as Fashion-MNIST (its path says "fashion"); else 10 classes "0".."9".
The gray images stay one uint8 array [N, H, W]; read(i) hands out example i as H x W x 3 (the model takes RGB), so
the workers slice an array and never decode a file.
"""
import gzip
import os
import struct

import numpy as np

from input.dataset_base import ArrayDataset
from input.messages import quote
from input.errors import DataError

IMAGES_MAGIC, LABELS_MAGIC = 0x00000803, 0x00000801
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
}
CLASS_NAMES_FILE = "class_names.txt"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")
_DTYPE_CODES = {0x08: "uint8", 0x09: "int8", 0x0B: "int16", 0x0C: "int32", 0x0D: "float32", 0x0E: "float64"}


def find(data_dir, stem):
  """The path of `stem` or `stem`.gz in data_dir, or None."""
  for name in (stem, stem + ".gz"):
    path = os.path.join(data_dir, name)
    if os.path.isfile(path):
      return path
  return None


def is_idx_dir(data_dir):
  return os.path.isdir(data_dir) and find(data_dir, FILES["train"][0]) is not None


def _read(path):
  opener = gzip.open if path.endswith(".gz") else open
  try:
    with opener(path, "rb") as f:
      return f.read()
  except (OSError, EOFError) as e:  # gzip's "not a gzipped file", a cut-off .gz stream
    raise DataError("%s: cannot be read as %s (%s)" % (quote(path), "gzip" if path.endswith(".gz") else "a file", e))


def read_idx(path, magic, ndim):
  """The uint8 array of an IDX file whose header must say `magic` (uint8 data of `ndim` dimensions)."""
  data = _read(path)
  if len(data) < 4 + 4 * ndim:
    raise DataError("%s: %d bytes, shorter than an IDX header of %d dimensions" % (quote(path), len(data), ndim))
  found, = struct.unpack(">I", data[:4])
  if found != magic:
    code, dims = (found >> 8) & 0xFF, found & 0xFF
    what = "%s data of %d dimensions" % (_DTYPE_CODES.get(code, "type 0x%02x" % code), dims) if found >> 16 == 0 \
        else "not an IDX file"
    raise DataError("%s: magic number 0x%08x (%s); expected 0x%08x (uint8 data of %d dimensions)" %
                    (quote(path), found, what, magic, ndim))
  shape = struct.unpack(">%dI" % ndim, data[4:4 + 4 * ndim])
  body = len(data) - 4 - 4 * ndim
  if body != int(np.prod(shape)):
    raise DataError("%s: the header declares %s = %d bytes of data but the file has %d (%s)" % (quote(path), " x ".join(
        str(s) for s in shape), int(np.prod(shape)), body, "truncated" if body < np.prod(shape) else "trailing bytes"))
  return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def class_names(data_dir, labels):
  """class_names.txt beside the files, Fashion-MNIST's names for a Fashion-MNIST folder, else "0".."9"."""
  listed = os.path.join(data_dir, CLASS_NAMES_FILE)
  if os.path.isfile(listed):
    with open(listed) as f:
      return [line.strip() for line in f if line.strip()]
  if "fashion" in os.path.abspath(data_dir).lower():
    return list(FASHION_MNIST_CLASSES)
  return [str(c) for c in range(10)]


class IdxDataset(ArrayDataset):
  """IDX images held as one gray uint8 array [N, H, W]; read(i) is the H x W x 3 view of image i."""

  def __init__(self, split, names, gray, labels, source):
    super(IdxDataset, self).__init__("idx", split, names, gray, labels, source)

  def read(self, i):
    return np.repeat(self.images[i][:, :, None], 3, axis=2)


def load_idx(data_dir, split="train"):
  """The IDX dataset of `split` in data_dir (see the module docstring); ValueError naming the file otherwise."""
  stems = FILES["train" if split == "train" else "test"]
  paths = [find(data_dir, stem) for stem in stems]
  if None in paths:
    missing = [stem for stem, path in zip(stems, paths) if path is None]
    raise DataError("%s has no %s for split %r: expected %s (or .gz)" %
                    (quote(data_dir), " or ".join(m + "[.gz]" for m in missing), split, " and ".join(stems)))
  images = read_idx(paths[0], IMAGES_MAGIC, 3)
  labels = read_idx(paths[1], LABELS_MAGIC, 1)
  if len(images) != len(labels):
    raise DataError("%s holds %d images but %s %d labels; expected one label per image" %
                    (quote(paths[0]), len(images), quote(paths[1]), len(labels)))
  names = class_names(data_dir, labels)
  if len(labels) and int(labels.max()) >= len(names):
    raise DataError(
        "%s: label %d but %d classes (%s); expected labels 0..%d, or a %s with one name per class "
        "beside the files (EMNIST has more than 10)" %
        (quote(paths[1]), int(labels.max()), len(names), CLASS_NAMES_FILE if os.path.isfile(
            os.path.join(data_dir, CLASS_NAMES_FILE)) else "the MNIST family's 10", len(names) - 1, CLASS_NAMES_FILE))
  return IdxDataset(split, names, images, labels.astype(np.int32), data_dir)
