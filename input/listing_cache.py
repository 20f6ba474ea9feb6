"""The listing of a local ImageFolder tree, kept in a cache file so that a resume does not walk the tree again.

The cache of /data/train is `<cache>/vit_listing/<hash of the path>-train.listing.npz`: the class folders, the
files (the two arrays of their dataset_base.PathTable, so that reading them back builds no str per file) and how
many each class holds, what the walk left out, and the state of every folder it listed: the root, each class
folder and each sub-folder, as (device, inode, ctime in ns).

When it is used: only while every one of those folders has the same device, inode and ctime. A folder's ctime
changes whenever an entry is added to it, removed, renamed or replaced (a symlink re-pointed included), and when
the folder itself is chmod-ed, moved or touched, so any change to *which files the tree holds* is seen, at any
depth; the check is one stat per folder (1,000 class folders: a few ms), not one per file. What it does not see,
by design: a file rewritten in place (its name, hence the listing, is unchanged; its new bytes are read anyway), and
what lies outside the tree: a symlink's target outside it that appears, vanishes or changes type (the workers then
meet it as a bad file and skip it, as any unreadable file). Not written: a walk that could not list a folder, or
whose folders changed less than SETTLE_SECONDS before it started (the tree was being written: a change in the same
timestamp tick could go unseen), or a tree on a URL (object stores keep no folder times; those are walked every
time). The file is written atomically; one that cannot be written or read is a debug line, never an error.
"""
import collections
import hashlib
import json
import logging
import os
import tempfile
import time
import zipfile

import numpy as np

from input import filesystem
from input.dataset_base import PathTable

LISTING_VERSION = 2  # 2: the paths as a PathTable (blob, offsets)
SUFFIX = ".listing.npz"
SETTLE_SECONDS = 2.0
_log = logging.getLogger(__name__)

FolderState = collections.namedtuple("FolderState", ["path", "dev", "ino", "ctime_ns"])
FolderState.__doc__ = """One listed folder as the walk saw it: its path and its device, inode and ctime."""

Listing = collections.namedtuple("Listing", [
    "root", "folders", "paths", "counts", "skips", "hidden_count", "first_hidden", "visited", "complete", "started_ns"
])
Listing.__doc__ = """What walking an ImageFolder tree found.

Attributes:
  root: the tree; folders: the class folder names, sorted; paths: every image file, class after class, in listing
  order; counts: how many of them each class folder holds; skips: (path, reason) left out; hidden_count,
  first_hidden: the ignored dot-entries; visited: FolderState of every folder listed; complete: every folder could
  be listed; started_ns: wall time when the walk started (time.time_ns()).
"""


def folder_state(path, info):
  """The FolderState of `path` from its os.stat result."""
  return FolderState(path, info.st_dev, info.st_ino, info.st_ctime_ns)


def cache_folder(base=None):
  """Where listings go: <base>/vit_listing; base None = $XDG_CACHE_HOME, else ~/.cache."""
  return os.path.join(filesystem.cache_base(base), "vit_listing")


def cache_path(root, base=None):
  digest = hashlib.sha1(os.path.abspath(root).encode("utf-8", "surrogateescape")).hexdigest()[:16]
  return os.path.join(cache_folder(base), "%s-%s%s" % (digest, os.path.basename(root.rstrip(os.sep)) or "root", SUFFIX))


def _relative(root, path):
  return path[len(root) + 1:] if path.startswith(root + os.sep) else os.path.relpath(path, root)


def save(listing, base=None):
  """Writes `listing` to its cache file, unless it may be stale already (see the module docstring); returns the
  path written or None."""
  settled = listing.started_ns - int(SETTLE_SECONDS * 1e9)
  if not listing.complete or not listing.visited or max(v.ctime_ns for v in listing.visited) > settled:
    _log.debug("input: listing of %s not cached: %s", listing.root,
               "a folder could not be listed" if not listing.complete else "its folders changed while it was walked")
    return None
  root = listing.root
  meta = {
      "version":
          LISTING_VERSION,
      "root":
          root,
      "folders":
          listing.folders,
      "skips": [[p, r] for p, r in listing.skips],
      "hidden_count":
          listing.hidden_count,
      "first_hidden":
          listing.first_hidden,
      "visited": [[_relative(root, v.path) if v.path != root else "", v.dev, v.ino, v.ctime_ns] for v in listing.visited
                 ]
  }
  path = cache_path(root, base)
  tmp = None
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".tmp", dir=os.path.dirname(path))
    with os.fdopen(fd, "wb") as f:
      table = PathTable.of(listing.paths)
      np.savez(f, meta=np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8), blob=table.blob,
               offsets=table.offsets, counts=np.asarray(listing.counts, np.int64))
    os.replace(tmp, path)
    return path
  except OSError as e:
    _log.debug("input: the listing of %s cannot be cached in %s (%s)", root, path, e)
    if tmp and os.path.exists(tmp):
      os.unlink(tmp)
    return None


def _unchanged(root, visited):
  for rel, dev, ino, ctime_ns in visited:
    try:
      info = os.stat(os.path.join(root, rel) if rel else root)
    except OSError:
      return False
    if (info.st_dev, info.st_ino, info.st_ctime_ns) != (dev, ino, ctime_ns):
      return False
  return True


def load(root, folders, base=None):
  """The cached Listing of `root` when its cache file exists and every folder it lists is unchanged, else None.
  `folders`: the class folders found now (a cache of others is not used)."""
  path = cache_path(root, base)
  if not os.path.exists(path):
    return None
  try:
    with np.load(path, allow_pickle=False) as z:
      meta = json.loads(z["meta"].tobytes().decode("utf-8"))
      files, counts = PathTable(blob=z["blob"], offsets=z["offsets"]), z["counts"]
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:  # a file cut short is a BadZipFile
    _log.debug("input: listing cache %s cannot be read (%s): walking %s", path, e, root)
    return None
  if meta.get("version") != LISTING_VERSION or meta.get("root") != root or meta.get("folders") != list(folders):
    return None
  if not _unchanged(root, meta["visited"]):
    _log.info("input: the listing cache of %s is out of date (a folder changed): walking the tree again", root)
    return None
  counts = [int(c) for c in counts]
  if len(files) != sum(counts):
    return None
  _log.info("input: %d files of %s from the listing cache %s (%d folders unchanged)", len(files), root, path,
            len(meta["visited"]))
  visited = [FolderState(os.path.join(root, r) if r else root, d, i, c) for r, d, i, c in meta["visited"]]
  return Listing(root, list(meta["folders"]), files, counts, [tuple(s) for s in meta["skips"]], meta["hidden_count"],
                 meta["first_hidden"], visited, True, time.time_ns())
