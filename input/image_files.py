"""Image files on disk: an ImageFolder tree or a list file.

ImageFolder: one sub-folder per class, classes sorted by name, images found by extension (.jpg .jpeg .png .bmp
.webp, case-insensitive, searched recursively inside each class folder, sorted). List file: one
`relative/path label` per line (label an int; the path may contain spaces, the label is the last field; blank lines
and lines starting with # are ignored). Relative paths are resolved against the list file's own folder; absolute
paths are used as they are. An optional classes.txt beside the list file names the classes (one per line); without
it num_classes is 1 + the largest label over every *.txt list in that folder, so train and val agree.
"""
import os

from input import image_codec
from input.dataset_base import FileDataset

CLASS_LIST_FILE = "classes.txt"


def class_folders(root):
  """Sorted names of the sub-folders of `root` (hidden ones skipped)."""
  try:
    entries = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
  except OSError:
    return []
  return entries


def _images_under(folder):
  found = []
  for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
    dirnames.sort()
    for name in sorted(filenames):
      if image_codec.is_image_file(name):
        found.append(os.path.join(dirpath, name))
  return found


def load_image_folder(root, split, class_names=None):
  """FileDataset over `root`/<class>/**/<image>. `class_names` fixes the label order (e.g. taken from train/).

  Raises ValueError naming `root` if it holds no class folders or no images.
  """
  root = os.path.abspath(root)
  folders = class_folders(root)
  if not folders:
    raise ValueError("%s has no class folders: expected one sub-folder per class holding .jpg/.jpeg/.png/.bmp/"
                     ".webp images" % root)
  names = list(class_names) if class_names is not None else folders
  index = {n: i for i, n in enumerate(names)}
  unknown = [f for f in folders if f not in index]
  if unknown:
    raise ValueError("%s has class folders that the training split lacks (%s): expected the same classes as "
                     "train/" % (root, ", ".join(unknown[:5])))
  paths, labels = [], []
  for folder in folders:
    for path in _images_under(os.path.join(root, folder)):
      paths.append(path)
      labels.append(index[folder])
  if not paths:
    raise ValueError("%s has class folders but no image files: expected .jpg/.jpeg/.png/.bmp/.webp files "
                     "inside them" % root)
  return FileDataset("imagefolder", split, names, paths, labels)


def _parse_list(list_path):
  entries = []
  with open(list_path, "r") as f:
    for lineno, line in enumerate(f, 1):
      line = line.strip()
      if not line or line.startswith("#"):
        continue
      parts = line.rsplit(None, 1)
      if len(parts) != 2 or not parts[1].lstrip("-").isdigit() or int(parts[1]) < 0:
        raise ValueError("%s line %d: expected 'relative/path label' with an integer label >= 0, got %r" %
                         (list_path, lineno, line))
      entries.append((parts[0], int(parts[1])))
  return entries


def _list_class_names(list_path, labels):
  folder = os.path.dirname(list_path)
  names_path = os.path.join(folder, CLASS_LIST_FILE)
  if os.path.isfile(names_path):
    with open(names_path, "r") as f:
      names = [line.strip() for line in f if line.strip()]
    if labels and max(labels) >= len(names):
      raise ValueError("%s names %d classes but %s uses label %d" % (names_path, len(names), list_path, max(labels)))
    return names
  top = max(labels) if labels else -1
  for name in os.listdir(folder):
    other = os.path.join(folder, name)
    if name.endswith(".txt") and name != CLASS_LIST_FILE and other != list_path:
      try:
        top = max([top] + [label for _, label in _parse_list(other)])
      except ValueError:
        pass  # not a list file
  return [str(i) for i in range(top + 1)]


def load_list_file(list_path, split):
  """FileDataset over the entries of a `path label` list file; raises ValueError naming the file."""
  list_path = os.path.abspath(list_path)
  if not os.path.isfile(list_path):
    raise ValueError("%s does not exist: expected a list file of 'relative/path label' lines" % list_path)
  entries = _parse_list(list_path)
  if not entries:
    raise ValueError("%s is empty: expected 'relative/path label' lines" % list_path)
  base = os.path.dirname(list_path)
  paths = [p if os.path.isabs(p) else os.path.join(base, p) for p, _ in entries]
  labels = [label for _, label in entries]
  return FileDataset("list", split, _list_class_names(list_path, labels), paths, labels)
