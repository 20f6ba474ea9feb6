"""ImageFolder trees: one sub-folder per class (classes sorted by name, label = index), images found by extension.

What becomes an example of class c:
- every file with an image extension (.jpg .jpeg .png .bmp .webp, case-insensitive) under c's folder, in sorted
  order: a folder's own files first, then its sub-folders, depth first;
- names starting with "." (.DS_Store, the ._x.jpg files macOS leaves, .hidden/ folders) are ignored and counted;
- a sub-folder reached through a symlink is entered (after all real sub-folders) only when it resolves inside c's
  own folder and was not listed yet, so a symlink loop (`ln -s .. train/a/loop`) neither counts a file twice nor
  takes another class's files; a folder that is another class's folder is never entered;
- left out, each with its reason: a symlinked file that resolves into another class's folder, a second name of a
  file already listed (the real name is kept), a dangling symlink, anything that is not a regular file (a FIFO
  named x.jpg, a device), and a folder that cannot be listed.
Everything left out is logged (logger input.image_folder) as `input: skipped <path>: <reason>` and kept in the
dataset's listing_skips; the hidden entries are counted in one info line.

A tree on a URL (gs://, ram://, ...: input/filesystem.py) is listed through tf.io.gfile in the same order, with one
listing per folder and no stat per file: an entry with an image extension is taken as a file, any other entry is
asked whether it is a folder (unless the listing marked it as one). Object stores have no symlinks, inodes or FIFOs,
so none of the checks above apply there; a folder named x.jpg would be read as a bad file.

A local listing of at least MIN_CACHED_FILES files is cached (input/listing_cache.py), so that a resume or a second
run does not walk the tree again.
"""
import logging
import os
import stat
import time

import numpy as np

from input import filesystem
from input import image_codec
from input import listing_cache
from input.dataset_base import FileDataset, PathTable
from input.messages import quote
from input.errors import DataError

MAX_SKIP_LINES = 20
# Smaller trees are listed in well under a second: not worth a cache file.
MIN_CACHED_FILES = 10000
_EXTENSIONS_TEXT = "/".join(image_codec.IMAGE_EXTENSIONS)

_log = logging.getLogger(__name__)


def class_folders(root):
  """Sorted names of the sub-folders of `root` (hidden ones skipped); [] if `root` cannot be listed."""
  if filesystem.is_url(root):
    return _remote_folders(root)
  try:
    entries = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
  except OSError:
    return []
  return entries


def _remote_folders(root):
  try:
    entries = filesystem.list_marked(root)
  except OSError:
    return []
  return sorted(name for name, marked in entries if not name.startswith(".") and
                (marked or (not image_codec.is_image_file(name) and filesystem.isdir(filesystem.join(root, name)))))


def _is_dir(entry):
  try:
    return entry.is_dir()
  except OSError:  # an entry we may not even stat is listed as a file and skipped with its reason there
    return False


def _inside(path, folder):
  return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


class _ClassListing(object):
  """The files of one class folder and what was left out.

  Folders reached through a symlink are listed after every real sub-folder, and of two names for one file the real
  one is kept, so links never change which files a plain tree lists or in what order.

  Attributes:
    paths: image files, in listing order.
    skips: (path, reason) of everything left out.
    hidden: paths of ignored entries whose name starts with ".".
    visited: listing_cache.FolderState of every folder listed (what a cached listing is checked against).
    complete: False when a folder could not be listed (such a listing is not cached).
  """

  def __init__(self, folder, others):
    """others: ({(st_dev, st_ino): name}, {realpath: name}) of the other class folders."""
    self._root = os.path.realpath(folder)
    self._other_keys, self._other_reals = others
    self._listed_folders = {}
    self.skips, self.hidden, self.visited = [], [], []
    self.complete = True
    candidates = []  # (path, (st_dev, st_ino), is_link) of every acceptable file, in listing order
    linked = [folder]
    while linked:
      stack = [linked.pop(0)]
      while stack:  # depth first, a folder's own files before its sub-folders: os.walk's order
        real, via_links = self._visit(stack.pop(), candidates)
        stack.extend(reversed(real))
        linked.extend(via_links)
    self.paths = self._unique(candidates)

  def _visit(self, folder, candidates):
    """Lists one folder's image files into `candidates`; returns its (real, symlinked) sub-folders."""
    try:
      info = os.stat(folder)
      entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as e:
      self.skips.append((folder, "cannot list this folder (%s)" % (e.strerror or e)))
      self.complete = False
      return [], []
    key = (info.st_dev, info.st_ino)
    if key in self._listed_folders:
      self.skips.append(
          (folder,
           "symlink to a folder listed already as %s (a loop or a second name)" % quote(self._listed_folders[key])))
      return [], []
    if key in self._other_keys:
      self.skips.append((folder, "is the folder of class %s" % quote(self._other_keys[key])))
      return [], []
    self._listed_folders[key] = folder
    self.visited.append(listing_cache.folder_state(folder, info))
    real, via_links = [], []
    for entry in entries:
      if entry.name.startswith("."):
        self.hidden.append(entry.path)
      elif _is_dir(entry):
        if not entry.is_symlink():
          real.append(entry.path)
          continue
        target = os.path.realpath(entry.path)
        if _inside(target, self._root):
          via_links.append(entry.path)
        else:
          self.skips.append((entry.path, "symlink to a folder outside its class folder (%s)" % quote(target)))
      elif image_codec.is_image_file(entry.name):
        found = self._file(entry, info.st_dev)
        if isinstance(found, str):
          self.skips.append((entry.path, found))
        else:
          candidates.append((entry.path, found, entry.is_symlink()))
    return real, via_links

  def _file(self, entry, folder_dev):
    """The file's (st_dev, st_ino), or the reason (a str) it is left out."""
    if entry.is_file(follow_symlinks=False):  # a plain regular file: no extra system call
      return folder_dev, entry.inode()
    try:
      info = entry.stat()
    except FileNotFoundError:
      return "dangling symlink"
    except OSError as e:
      return "cannot stat it (%s)" % (e.strerror or e)
    if not stat.S_ISREG(info.st_mode):
      return "%s, not a regular file" % image_codec.file_kind(info.st_mode)
    if entry.is_symlink():
      target = os.path.realpath(entry.path)
      if not _inside(target, self._root):
        for real, name in self._other_reals.items():
          if _inside(target, real):
            return "symlink into the folder of class %s (%s)" % (quote(name), quote(target))
    return info.st_dev, info.st_ino

  def _unique(self, candidates):
    """The candidate paths with every file once: its first real name, else its first link."""
    keep = {}
    for i, (_, key, is_link) in enumerate(candidates):
      if key not in keep or (candidates[keep[key]][2] and not is_link):
        keep[key] = i
    paths = []
    for i, (path, key, _) in enumerate(candidates):
      if keep[key] == i:
        paths.append(path)
      else:
        self.skips.append((path, "the same file as %s, listed already" % quote(candidates[keep[key]][0])))
    return paths


def _class_identities(root, folders):
  """{name: ((st_dev, st_ino), realpath)} of the class folders; ValueError if two of them are one folder."""
  identities, names_by_key = {}, {}
  for name in folders:
    path = os.path.join(root, name)
    info = os.stat(path)
    key = (info.st_dev, info.st_ino)
    if key in names_by_key:
      raise DataError("%s: class folders %s and %s are the same folder (a symlink?): expected one folder per "
                      "class" % (root, quote(names_by_key[key]), quote(name)))
    names_by_key[key] = name
    identities[name] = (key, os.path.realpath(path))
  return identities


class _RemoteClassListing(object):
  """The files of one class folder on a URL, in the local listing's order (a folder's own files in sorted order,
  then its sub-folders, depth first).

  Attributes:
    paths, skips, hidden: as _ClassListing's.
  """

  def __init__(self, folder):
    self.paths, self.skips, self.hidden = [], [], []
    stack = [folder]
    while stack:
      current = stack.pop()
      try:
        entries = sorted(filesystem.list_marked(current), key=lambda entry: entry[0])
      except OSError as e:
        self.skips.append((current, "cannot list this folder (%s)" % (e.strerror or e)))
        continue
      subfolders = []
      for name, marked in entries:
        path = filesystem.join(current, name)
        if name.startswith("."):
          self.hidden.append(path)
        elif marked:
          subfolders.append(path)
        elif image_codec.is_image_file(name):
          self.paths.append(path)
        elif filesystem.isdir(path):
          subfolders.append(path)
      stack.extend(reversed(subfolders))


def _list_tree(root, folders):
  """The listing_cache.Listing of the class folders `folders` of `root`, walked now."""
  started_ns = time.time_ns()
  if filesystem.is_url(root):
    listings = [_RemoteClassListing(filesystem.join(root, f)) for f in folders]
    visited, complete = [], False
  else:
    identities = _class_identities(root, folders)
    listings = []
    for folder in folders:
      others = ({
          key: n for n, (key, _) in identities.items() if n != folder
      }, {
          real: n for n, (_, real) in identities.items() if n != folder
      })
      listings.append(_ClassListing(os.path.join(root, folder), others))
    visited = [listing_cache.folder_state(root, os.stat(root))] + [v for l in listings for v in l.visited]
    complete = all(l.complete for l in listings)
  hidden = [h for l in listings for h in l.hidden]
  return listing_cache.Listing(root, list(folders), [p for l in listings for p in l.paths],
                               [len(l.paths) for l in listings], [s for l in listings for s in l.skips], len(hidden),
                               hidden[0] if hidden else None, visited, complete, started_ns)


def _report(root, skips, hidden_count, first_hidden):
  for path, reason in skips[:MAX_SKIP_LINES]:
    _log.warning("input: skipped %s: %s", quote(path), reason)
  if len(skips) > MAX_SKIP_LINES:
    _log.warning("input: %d more entries skipped while listing %s", len(skips) - MAX_SKIP_LINES, quote(root))
  if hidden_count:
    _log.info(
        "input: ignored %d hidden files and folders in %s (names starting with '.', e.g. %s)", hidden_count,
        quote(root),
        quote(os.path.relpath(first_hidden, root) if not filesystem.is_url(root) else first_hidden[len(root) + 1:]))


def load_image_folder(root, split, class_names=None, cache_dir=None):
  """FileDataset over `root`/<class>/**/<image>. `class_names` fixes the label order (e.g. taken from train/).

  root: a local path or a URL (input/filesystem.py). cache_dir: the base folder of the listing cache (None:
  listing_cache.cache_folder()'s default); a local listing of MIN_CACHED_FILES files or more is read from there
  while its folders are unchanged, and written there after a walk.

  Raises ValueError naming `root` if it holds no class folders or no images, or a class folder that
  `class_names` lacks.
  """
  root = filesystem.abspath(root)
  folders = class_folders(root)
  if not folders:
    raise DataError("%s has no class folders: expected one sub-folder per class holding %s images" %
                    (root, _EXTENSIONS_TEXT))
  names = list(class_names) if class_names is not None else folders
  index = {n: i for i, n in enumerate(names)}
  unknown = [f for f in folders if f not in index]
  if unknown:
    raise DataError("%s has class folders that the training split lacks (%s): expected the same classes as "
                    "train/" % (root, ", ".join(quote(u) for u in unknown[:5])))
  listing = None
  local = not filesystem.is_url(root)
  if local:
    listing = listing_cache.load(root, folders, cache_dir)
  if listing is None:
    listing = _list_tree(root, folders)
    listing = listing._replace(paths=PathTable(listing.paths))
    if local and len(listing.paths) >= MIN_CACHED_FILES:
      listing_cache.save(listing, cache_dir)
  _report(root, listing.skips, listing.hidden_count, listing.first_hidden)
  if not listing.paths:
    raise DataError("%s has class folders but no image files: expected %s files inside them" % (root, _EXTENSIONS_TEXT))
  labels = np.repeat(np.array([index[f] for f in listing.folders], np.int32), listing.counts)
  return FileDataset("imagefolder", split, names, listing.paths, labels, source=root, listing_skips=listing.skips)
