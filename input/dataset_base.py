"""The Dataset interface every reader returns, its two shapes (images in memory, or image files on disk), and the
error for a dataset none of whose files can be read."""
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
    paths: list of absolute file paths, parallel to `labels`.
    listing_skips: (path, reason) of every entry left out while the dataset was listed (loops, FIFOs, ...).
  """

  def __init__(self, name, split, class_names, paths, labels, source="", listing_skips=()):
    super(FileDataset, self).__init__(name, split, class_names, labels, source)
    self.paths = list(paths)
    self.listing_skips = list(listing_skips)

  def read_encoded(self, i):
    """The raw file bytes of example i (the pipeline decodes them itself, possibly at reduced scale)."""
    return image_codec.read_bytes(self.paths[i])

  def read(self, i):
    return image_codec.decode_rgb(self.read_encoded(i), self.paths[i])

  def describe(self, i):
    return self.paths[i]
