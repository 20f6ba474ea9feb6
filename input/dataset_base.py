"""The Dataset interface every reader returns, its two shapes (images in memory, or image files on disk), the
compact table of file paths, and the error for a dataset none of whose files can be read."""
import collections.abc
import operator

import numpy as np

from input import image_codec
from input import messages
from input.errors import InputError


class UnreadableDatasetError(InputError):
  """A dataset whose image files cannot be read at all (e.g. Git LFS pointer files instead of the images): the
  message is one line naming the dataset and the first few files with their reasons."""


def unreadable(dataset, what, failures):
  """The UnreadableDatasetError for `dataset`; `what` says what was tried, failures are (file, reason) pairs."""
  return UnreadableDatasetError("%s: %s could be read as an image: %s" %
                                (dataset.title(), what, messages.first_few(failures)))


class PathTable(collections.abc.Sequence):
  """File paths held as one UTF-8 byte array and an offset array, read back as str: a sequence like a list of paths.

  Why not a list of str: each str costs about 110 bytes for an ImageNet path, and a forked worker that reads one
  writes its reference count into the page holding it, so over an epoch every worker ends up with a private copy
  of the whole list (measured: 146 MB per worker for 1.28 M paths; tools.bench_listing). Numpy arrays are not
  written when read, so the workers keep sharing these pages with the parent; the table itself is about 60 bytes a
  path.

  Attributes:
    blob: uint8 array, the paths' bytes one after the other (surrogateescape for undecodable names).
    offsets: int64 array [n + 1], where path i starts (offsets[i]) and ends (offsets[i + 1]) in blob.
  """

  def __init__(self, paths=(), blob=None, offsets=None):
    """From a sequence of str `paths`, or from the arrays `blob` and `offsets` of another table (e.g. a cache)."""
    if blob is None:
      encoded = [p.encode("utf-8", "surrogateescape") for p in paths]
      offsets = np.zeros(len(encoded) + 1, np.int64)
      np.cumsum(np.fromiter((len(e) for e in encoded), np.int64, len(encoded)), out=offsets[1:])
      blob = np.frombuffer(b"".join(encoded), np.uint8)
    self.blob = np.asarray(blob, np.uint8)
    self.offsets = np.asarray(offsets, np.int64)

  @classmethod
  def of(cls, paths):
    """`paths` itself when it is a PathTable, else a new table of it."""
    return paths if isinstance(paths, cls) else cls(paths)

  def __len__(self):
    return len(self.offsets) - 1

  def __getitem__(self, i):
    if isinstance(i, slice):
      return [self[k] for k in range(*i.indices(len(self)))]
    i = operator.index(i)
    n = len(self)
    if i < 0:
      i += n
    if not 0 <= i < n:
      raise IndexError("path %d of a table of %d" % (i, n))
    return self.blob[self.offsets[i]:self.offsets[i + 1]].tobytes().decode("utf-8", "surrogateescape")

  def __eq__(self, other):
    if isinstance(other, PathTable):
      return np.array_equal(self.offsets, other.offsets) and np.array_equal(self.blob, other.blob)
    if isinstance(other, (list, tuple)):
      return list(self) == list(other)
    return NotImplemented

  def __ne__(self, other):
    equal = self.__eq__(other)
    return equal if equal is NotImplemented else not equal

  __hash__ = None

  def __repr__(self):
    return "<PathTable of %d paths, %d bytes>" % (len(self), self.blob.nbytes + self.offsets.nbytes)


class Dataset(object):
  """A labelled image collection, indexed 0..len-1.

  Attributes:
    name: reader name ("cifar10", "cifar100", "imagefolder", "list", "digits").
    split: "train" or the evaluation split name that was asked for.
    num_classes: number of classes (labels are 0..num_classes-1).
    class_names: list of str, one per class.
    labels: int32 array [len], the label of every example.
    source: the folder or file the examples come from ("" for bundled data).
  """

  def __init__(self, name, split, class_names, labels, source=""):
    self.name = name
    self.split = split
    self.source = source
    self.class_names = [str(c) for c in class_names]
    self.num_classes = len(self.class_names)
    self.labels = np.asarray(labels, dtype=np.int32)

  def __len__(self):
    return len(self.labels)

  def label(self, i):
    return int(self.labels[i])

  def read(self, i):
    """uint8 RGB HxWx3 array of example i; raises image_codec.DecodeError if it cannot be decoded."""
    raise NotImplementedError

  def describe(self, i):
    """Where example i comes from, for warning lines."""
    return "%s %s #%d" % (self.name, self.split, i)

  def title(self):
    """'<name> <split> (<source>)', how messages name the whole dataset."""
    return "%s %s%s" % (self.name, self.split, " (%s)" % messages.quote(self.source) if self.source else "")

  def __repr__(self):
    return "<%s %s: %d examples, %d classes>" % (self.name, self.split, len(self), self.num_classes)


class ArrayDataset(Dataset):
  """Images held in memory as one uint8 array [N,H,W,3] (RGB): CIFAR and digits."""

  def __init__(self, name, split, class_names, images, labels, source=""):
    super(ArrayDataset, self).__init__(name, split, class_names, labels, source)
    self.images = np.ascontiguousarray(images, dtype=np.uint8)

  def read(self, i):
    return self.images[i]


class FileDataset(Dataset):
  """Images stored as encoded files (JPEG/PNG/BMP/WebP), one path per example.

  Attributes:
    paths: the absolute file paths (or URLs), parallel to `labels`: a PathTable (a sequence of str).
    listing_skips: (path, reason) of every entry left out while the dataset was listed (loops, FIFOs, ...).
  """

  def __init__(self, name, split, class_names, paths, labels, source="", listing_skips=()):
    super(FileDataset, self).__init__(name, split, class_names, labels, source)
    self.paths = PathTable.of(paths)
    self.listing_skips = list(listing_skips)

  def read_encoded(self, i):
    """The raw file bytes of example i (the pipeline decodes them itself, possibly at reduced scale)."""
    return image_codec.read_bytes(self.paths[i])

  def read(self, i):
    return image_codec.decode_rgb(self.read_encoded(i), self.paths[i])

  def describe(self, i):
    return self.paths[i]
