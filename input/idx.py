"""MNIST-family IDX files (MNIST, Fashion-MNIST, KMNIST, EMNIST under these names), held in memory as gray arrays.

Split -> files: "train" reads train-images-idx3-ubyte and train-labels-idx1-ubyte, any other split ("test", "val")
reads t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte. Each is found as `name` or `name.gz` (the plain one first
when both exist); whether it is gzip-compressed is decided by its first bytes, not its name. Checked when the dataset
opens, each a one-line ValueError naming the file: the magic number (0x00000803 = unsigned bytes in 3 dimensions,
images; 0x00000801 = unsigned bytes in 1 dimension, labels; other data types are refused), no zero dimension,
exactly as many bytes after the header as the header announces (a truncated or over-long file says both counts),
a gzip stream that decompresses to its end, one label per image, every label in 0..num_classes-1.

Classes: class_names.txt beside the files (UTF-8, one name per line) when present; otherwise Fashion-MNIST's ten
names when the folder's path says "fashion" (any case), else "0".."9".

The pixels stay one gray uint8 array [N, H, W] (47 MB for 60,000 images of 28x28, a third of RGB), shared with
forked workers copy-on-write; `images` is a 3-channel view of it and read(i) a small RGB copy, so workers slice an
array and decode nothing.
"""
import functools
import gzip
import logging
import operator
import os
import struct
import zlib

import numpy as np

from input import filesystem
from input.dataset_base import ArrayDataset, Dataset
from input.errors import DataError
from input.messages import quote

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
CLASS_NAMES_FILE = "class_names.txt"
DEFAULT_NUM_CLASSES = 10
FASHION_MNIST_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                       "Ankle boot")
_UNSIGNED_BYTE = 0x08
_TYPE_NAMES = {
    0x08: "unsigned byte",
    0x09: "signed byte",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64"
}
# What each magic number holds, for messages: (kind, what its dimensions count).
_KINDS = {IMAGES_MAGIC: ("images", "count, rows, columns"), LABELS_MAGIC: ("labels", "count")}
_GZIP_START = b"\x1f\x8b"
_CHUNK = 1 << 22
_log = logging.getLogger(__name__)


def file_names(split):
  """(images file, labels file) of `split`, without the optional .gz."""
  stem = "train" if split == "train" else "t10k"
  return stem + "-images-idx3-ubyte", stem + "-labels-idx1-ubyte"


def find(data_dir, name):
  """The path of `name`, else of `name`.gz, in data_dir; None when neither is a file."""
  for candidate in (name, name + ".gz"):
    path = os.path.join(data_dir, candidate)
    if filesystem.isfile(path):
      return path
  return None


def is_idx_dir(data_dir):
  """Whether data_dir holds the images file of either split."""
  return filesystem.isdir(data_dir) and any(find(data_dir, file_names(s)[0]) for s in ("train", "test"))


def _idx_files_in(data_dir):
  names = set(file_names("train") + file_names("test"))
  return sorted(n for n in filesystem.listdir(data_dir) if n in names or (n.endswith(".gz") and n[:-3] in names))


def _read_upto(stream, limit):
  """Up to `limit` bytes of stream, and whether a gzip stream was cut off before its end marker. Read in chunks, so
  a header that claims terabytes allocates only what the file really holds."""
  data = bytearray()
  while len(data) < limit:
    try:
      chunk = stream.read1(min(_CHUNK, limit - len(data)))
    except EOFError:
      return data, True
    if not chunk:
      break
    data += chunk
  return data, False


def _count_rest(stream):
  count = 0
  while True:
    chunk = stream.read1(_CHUNK)
    if not chunk:
      return count
    count += len(chunk)


def _expected(magic):
  kind, dims = _KINDS[magic]
  ndim = magic & 0xFF
  plural = "s" if ndim > 1 else ""
  return "expected the IDX magic number 0x%08x (%s: unsigned bytes, %d dimension%s: %s)" % (magic, kind, ndim, plural,
                                                                                            dims)


def _check_magic(path, head, magic, cut):
  if len(head) < 4:
    raise DataError("%s: truncated: %d bytes%s where the 4-byte magic number belongs: %s" %
                    (quote(path), len(head), " before the gzip data ends" if cut else "", _expected(magic)))
  if head[:2] != b"\0\0":
    raise DataError("%s: not an IDX file (it starts with %r): %s" % (quote(path), bytes(head[:4]), _expected(magic)))
  code, ndim = head[2], head[3]
  if code != _UNSIGNED_BYTE:
    raise DataError("%s: IDX data type 0x%02x (%s) is not supported: %s" %
                    (quote(path), code, _TYPE_NAMES.get(code, "unknown"), _expected(magic)))
  if ndim != magic & 0xFF:
    other = {1: " (a labels file?)", 3: " (an images file?)"}.get(ndim, "")
    raise DataError("%s: IDX data of %d dimension%s%s: %s" %
                    (quote(path), ndim, "" if ndim == 1 else "s", other, _expected(magic)))


def _parse(stream, path, magic, compressed, file_size):
  head, cut = _read_upto(stream, 4)
  _check_magic(path, head, magic, cut)
  ndim = head[3]
  dim_bytes, cut = _read_upto(stream, 4 * ndim)
  if len(dim_bytes) < 4 * ndim:
    raise DataError("%s: truncated inside its header: expected %d dimension sizes (%d bytes) after the magic number, "
                    "found %d bytes" % (quote(path), ndim, 4 * ndim, len(dim_bytes)))
  dims = struct.unpack(">%dI" % ndim, bytes(dim_bytes))
  kind, meaning = _KINDS[magic]
  if 0 in dims:
    raise DataError("%s: its header gives %s = %s: expected no zero dimension" %
                    (quote(path), meaning, " x ".join(str(d) for d in dims)))
  header_size = 4 + 4 * ndim
  expected = functools.reduce(operator.mul, dims, 1)  # python ints: no overflow whatever the header says
  shape = " x ".join(str(d) for d in dims)

  def mismatch(found, why):
    return ValueError("%s: expected %d bytes of %s after its %d-byte header (%s), found %d%s" %
                      (quote(path), expected, kind, header_size, shape, found, why))

  found = file_size - header_size
  if not compressed and found != expected:
    raise mismatch(found, ": a truncated file" if found < expected else ": data beyond what the header announces")
  body, cut = _read_upto(stream, expected + 1)  # one byte more: a longer file shows, and gzip checks its CRC
  if len(body) < expected:
    raise mismatch(len(body), " before the gzip data ends: a truncated file" if cut else ": a truncated file")
  if len(body) > expected:
    raise mismatch(expected + 1 + _count_rest(stream), ": data beyond what the header announces")
  return dims, body


def read_idx(path, magic):
  """(dims, bytearray of the data) of the IDX file at path, plain or gzip-compressed, whose magic must be `magic`
  (IMAGES_MAGIC or LABELS_MAGIC); ValueError with one line naming the file otherwise."""
  file_size = filesystem.stat(path).size
  with filesystem.open_read(path) as raw:
    compressed = raw.read(2) == _GZIP_START
    raw.seek(0)
    if not compressed:
      return _parse(raw, path, magic, False, file_size)
    try:
      with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
        return _parse(stream, path, magic, True, file_size)
    except (OSError, EOFError, zlib.error) as e:  # a bad gzip header, corrupt deflate data, a CRC mismatch
      raise DataError("%s: cannot be decompressed (%s): expected a complete gzip-compressed IDX file" %
                      (quote(path), str(e).strip() or type(e).__name__))


def read_class_names(path):
  """The class names of a class_names.txt: one per line (UTF-8, a byte-order mark dropped, names stripped, trailing
  blank lines ignored); a blank line among them, a repeated name or an empty file is a ValueError naming the file."""
  raw = filesystem.read_file(path)
  try:
    text = raw.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    raise DataError("%s: not UTF-8 text (byte %d): expected one class name per line" % (quote(path), e.start))
  names = [line.strip() for line in text.split("\n")]
  while names and not names[-1]:
    names.pop()
  if not names:
    raise DataError("%s is empty: expected one class name per line (label i is the name on line i + 1)" % quote(path))
  if "" in names:
    raise DataError("%s: line %d is blank: expected one class name per line (label i is the name on line i + 1)" %
                    (quote(path), names.index("") + 1))
  first = {}
  for line, name in enumerate(names, 1):
    if name in first:
      raise DataError("%s: lines %d and %d both name %s: expected distinct class names" %
                      (quote(path), first[name], line, quote(name)))
    first[name] = line
  return names


def is_fashion_dir(data_dir):
  """Whether the folder is recognised as Fashion-MNIST: its path (as given or resolved) says "fashion"."""
  if filesystem.is_url(data_dir):
    return "fashion" in data_dir.lower()
  return any("fashion" in p.lower() for p in (os.path.abspath(data_dir), os.path.realpath(data_dir)))


def class_names(data_dir):
  """(names, where they come from): class_names.txt beside the files, Fashion-MNIST's names, or "0".."9"."""
  path = os.path.join(data_dir, CLASS_NAMES_FILE)
  if filesystem.isfile(path):
    return read_class_names(path), "named in " + quote(path)
  if is_fashion_dir(data_dir):
    return list(FASHION_MNIST_NAMES), "Fashion-MNIST's (its path says fashion)"
  return [str(i) for i in range(DEFAULT_NUM_CLASSES)], "the MNIST family's default"


class IdxDataset(ArrayDataset):
  """An ArrayDataset whose pixels are stored once in gray.

  Attributes:
    gray: uint8 [N, H, W], the pixels as the file holds them.
    images: uint8 [N, H, W, 3], a read-only view of gray with the value repeated in R, G and B (no copy).
    files: (images file, labels file) that were read.
  """

  def __init__(self, split, class_names, gray, labels, source, files):
    # ArrayDataset.__init__ would store an RGB copy; `images` is a view here.
    Dataset.__init__(self, "idx", split, class_names, labels, source)
    self.gray = gray
    self.files = tuple(files)

  @property
  def images(self):
    return np.broadcast_to(self.gray[..., None], self.gray.shape + (3,))

  def read(self, i):
    return np.repeat(self.gray[i][:, :, None], 3, axis=2)


def _check_labels(labels, num_classes, labels_path, names_origin, names_file):
  bad = np.flatnonzero(labels >= num_classes)
  if len(bad):
    fix = ("name every class in it, one per line"
           if names_file else "a %s beside the files, one name per line, sets the classes" % CLASS_NAMES_FILE)
    raise DataError("%s: label %d of example %d is outside 0..%d (%d classes, %s)%s; %s" %
                    (quote(labels_path), labels[bad[0]], bad[0], num_classes - 1, num_classes, names_origin,
                     ", and %d more labels are" % (len(bad) - 1) if len(bad) > 1 else "", fix))


def load_idx(data_dir, split="train"):
  """The IdxDataset of `split` in data_dir (see the module docstring); ValueError with one line otherwise."""
  if not filesystem.isdir(data_dir):
    raise DataError("%s is not a folder: expected a folder holding MNIST-family IDX files (%s[.gz], ...)" %
                    (quote(data_dir), file_names("train")[0]))
  wanted = file_names(split)
  paths = [find(data_dir, name) for name in wanted]
  if None in paths:
    present = _idx_files_in(data_dir)
    raise DataError("%s has no %s for split %r: expected %s (MNIST-family IDX files, optionally .gz); %s" %
                    (quote(data_dir), " or ".join(n + "[.gz]" for n, p in zip(wanted, paths) if p is None), split,
                     " and ".join(n + "[.gz]" for n in wanted),
                     "the folder holds only " + ", ".join(present) if present else "the folder holds no IDX file"))
  images_path, labels_path = paths
  dims, pixels = read_idx(images_path, IMAGES_MAGIC)
  (count,), label_bytes = read_idx(labels_path, LABELS_MAGIC)
  if count != dims[0]:
    raise DataError("%s: %d labels for the %d images of %s: expected one label per image" %
                    (quote(labels_path), count, dims[0], quote(images_path)))
  names, origin = class_names(data_dir)
  labels = np.frombuffer(label_bytes, np.uint8)
  _check_labels(labels, len(names), labels_path, origin, filesystem.isfile(os.path.join(data_dir, CLASS_NAMES_FILE)))
  gray = np.frombuffer(pixels, np.uint8).reshape(dims)
  _log.info("input: idx %s: %d images of %dx%d from %s, labels from %s, %d classes (%s)", split, dims[0], dims[1],
            dims[2], quote(images_path), quote(labels_path), len(names), origin)
  return IdxDataset(split, names, gray, labels, data_dir, paths)
