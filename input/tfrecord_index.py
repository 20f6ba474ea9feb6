"""Which records a TFRecord shard holds: offsets, lengths and raw labels, built once by reading the shard and cached.

The index of `train-00000-of-01024` is `train-00000-of-01024.index.npz` beside it, or, when that folder cannot be
written (a read-only dataset), `<cache>/<hash of the shard's path>-train-00000-of-01024.index.npz`. It records the
shard's size and mtime; an index whose shard has another size or mtime (or that another layout or version wrote) is
rebuilt, with one info line saying why. Building reads the whole shard once and checks every CRC: a record with a
bad CRC, an Example that does not parse or without a label stays in the index marked bad with its reason (the
workers skip and count it, as a corrupt file); a truncated last record or a broken length ends the index there, with
one warning naming the shard, the offset and what was expected.

A shard on a URL (gs://, ram://: input/filesystem.py) is read through tf.io.gfile; its index is read from beside it
when one is there (e.g. copied up with the shards) but written only to the local cache folder: a remote dataset
folder is never written to.
"""
import collections
import hashlib
import io
import json
import logging
import os
import tempfile
import zipfile

import numpy as np

from input import filesystem
from input import tfrecord_format
from input.messages import quote

INDEX_VERSION = 1
INDEX_SUFFIX = ".index.npz"
_log = logging.getLogger(__name__)

Keys = collections.namedtuple("Keys", ["layout", "label", "names"])
Keys.__doc__ = """What the index reads of each record: layout name, label feature, class-name features (tuple)."""


class ShardIndex(object):
  """The records of one shard.

  Attributes:
    path: the shard.
    offsets: int64 [n], where each record's header starts.
    lengths: int64 [n], each record's data length.
    labels: int64 [n], the raw label feature of each record (0 for a bad record).
    bad: {record number: reason} of the records that cannot be used (CRC mismatch, no label, not an Example).
    names: {raw label: [name per Keys.names feature]} as first met (class names of the official layout).
    conflicts: [(raw label, name, other name, offset)] records naming a label differently than an earlier one.
    keys_seen: sorted feature names of the first record that parsed (for messages).
    end_problem: None, or (offset, reason) where the index stops before the end of the shard.
  """

  def __init__(self, path, offsets, lengths, labels, bad, names, conflicts, keys_seen, end_problem):
    self.path = path
    self.offsets = np.asarray(offsets, dtype=np.int64)
    self.lengths = np.asarray(lengths, dtype=np.int64)
    self.labels = np.asarray(labels, dtype=np.int64)
    self.bad = dict(bad)
    self.names = dict(names)
    self.conflicts = list(conflicts)
    self.keys_seen = list(keys_seen)
    self.end_problem = end_problem

  def __len__(self):
    return len(self.offsets)


def cache_folder(base=None):
  """Where indexes of read-only or remote shards go: <base>/vit_tfrecord_index; base None = $XDG_CACHE_HOME, else
  ~/.cache."""
  return os.path.join(filesystem.cache_base(base), "vit_tfrecord_index")


def index_paths(shard, cache_dir=None):
  """[beside the shard, in the cache folder]: where its index may be."""
  digest = hashlib.sha1(filesystem.abspath(shard).encode("utf-8", "surrogateescape")).hexdigest()[:16]
  cached = os.path.join(cache_dir or cache_folder(), "%s-%s%s" % (digest, os.path.basename(shard), INDEX_SUFFIX))
  return [shard + INDEX_SUFFIX, cached]


def _first(values):
  return values[0] if values else None


def build(shard, keys):
  """Reads `shard` from start to end and returns its ShardIndex (every CRC checked)."""
  offsets, lengths, labels, bad, names, conflicts = [], [], [], {}, {}, []
  keys_seen, end_problem = None, None
  wanted = (keys.label,) + tuple(keys.names)
  size = filesystem.stat(shard).size
  with filesystem.open_read(shard, buffering=1 << 20) as f:
    pos = 0
    while pos < size:
      header = f.read(tfrecord_format.HEADER_BYTES)
      if len(header) < tfrecord_format.HEADER_BYTES:
        end_problem = (pos, "truncated record: %d bytes left, a record header is %d" %
                       (len(header), tfrecord_format.HEADER_BYTES))
        break
      length, error = tfrecord_format.parse_header(header)
      if error:
        end_problem = (pos, "%s: the %d bytes from here on cannot be framed into records" % (error, size - pos))
        break
      record_bytes = tfrecord_format.HEADER_BYTES + length + tfrecord_format.FOOTER_BYTES
      if pos + record_bytes > size:
        end_problem = (pos, "truncated record: its header declares %d data bytes (%d with framing), %d bytes are left" %
                       (length, record_bytes, size - pos))
        break
      data = f.read(length)
      footer = f.read(tfrecord_format.FOOTER_BYTES)
      number = len(offsets)
      reason = tfrecord_format.check_data(data, footer)
      label = 0
      if reason is None:
        try:
          if keys_seen is None:
            keys_seen = sorted(tfrecord_format.parse_example(data))
          features = tfrecord_format.parse_example(data, wanted)
          value = _first(features.get(keys.label, []))
          if not isinstance(value, int):
            reason = "no integer %r feature in the record" % keys.label
          else:
            label = value
            found = [_first(features.get(k, [])) for k in keys.names]
            found = [v.decode("utf-8", "replace") if isinstance(v, bytes) else None for v in found]
            if any(v is not None for v in found):
              known = names.setdefault(label, found)
              if known != found and len(conflicts) < 10:
                conflicts.append((label, known, found, pos))
        except tfrecord_format.RecordError as e:
          reason = e.reason
      if reason is not None:
        bad[number] = reason
      offsets.append(pos)
      lengths.append(length)
      labels.append(label)
      pos += record_bytes
  return ShardIndex(shard, offsets, lengths, labels, bad, names, conflicts, keys_seen or [], end_problem)


def _meta(index, keys, stat):
  return {
      "version": INDEX_VERSION,
      "shard": os.path.basename(index.path),
      "size": stat.size,
      "mtime_ns": stat.mtime_ns,
      "keys": [keys.layout, keys.label] + list(keys.names),
      "bad": [[n, r] for n, r in sorted(index.bad.items())],
      "names": [[label, n] for label, n in sorted(index.names.items())],
      "conflicts": index.conflicts,
      "keys_seen": index.keys_seen,
      "end_problem": index.end_problem,
  }


def save(index, keys, stat, path):
  """Writes `index` to `path` atomically (a temporary file in the same folder, then a rename)."""
  meta = json.dumps(_meta(index, keys, stat)).encode("utf-8")
  folder = os.path.dirname(path) or "."
  fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".tmp", dir=folder)
  try:
    with os.fdopen(fd, "wb") as f:
      np.savez(f, offsets=index.offsets, lengths=index.lengths, labels=index.labels,
               meta=np.frombuffer(meta, dtype=np.uint8))
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def load(path, shard, keys, stat):
  """(ShardIndex, None) from the index file `path`, or (None, why it cannot be used) when it is stale, of another
  layout or version, or unreadable."""
  try:
    source = io.BytesIO(filesystem.read_file(path)) if filesystem.is_url(path) else path
    with np.load(source, allow_pickle=False) as z:
      meta = json.loads(z["meta"].tobytes().decode("utf-8"))
      offsets, lengths, labels = z["offsets"], z["lengths"], z["labels"]
  # a remote read's DataError is a ValueError; an index file cut short is a BadZipFile
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
    return None, "cannot be read (%s)" % e
  if meta.get("version") != INDEX_VERSION:
    return None, "was written by index version %r, this is %d" % (meta.get("version"), INDEX_VERSION)
  if meta.get("keys") != [keys.layout, keys.label] + list(keys.names):
    return None, "was built for other features (%s)" % ", ".join(map(str, meta.get("keys") or []))
  if meta.get("size") != stat.size or meta.get("mtime_ns") != stat.mtime_ns:
    return None, "is older than its shard (indexed %s bytes, mtime %s; now %d bytes, mtime %d)" % (
        meta.get("size"), meta.get("mtime_ns"), stat.size, stat.mtime_ns)
  end = meta.get("end_problem")
  index = ShardIndex(shard, offsets, lengths, labels, {
      n: r for n, r in meta["bad"]
  }, {
      label: n for label, n in meta["names"]
  }, [tuple(c) for c in meta["conflicts"]], meta["keys_seen"],
                     tuple(end) if end else None)
  return index, None


def shard_index(shard, keys, cache_dir=None):
  """The ShardIndex of `shard`: loaded from its index when that is current, else built and saved (beside the shard,
  or in the cache folder when the shard's folder cannot be written)."""
  index = _load_or_build(shard, keys, cache_dir)
  if index.end_problem:
    _log.warning("input: %s at offset %d: %s; the %d records before it are used", quote(shard), index.end_problem[0],
                 index.end_problem[1], len(index))
  return index


def _load_or_build(shard, keys, cache_dir):
  stat = filesystem.stat(shard)
  stale = []
  for path in index_paths(shard, cache_dir):
    if filesystem.exists(path):
      index, why = load(path, shard, keys, stat)
      if index is not None:
        return index
      stale.append((path, why))
  if stale:
    _log.info("input: index %s %s: rebuilding it", quote(stale[0][0]), stale[0][1])
  index = build(shard, keys)
  last_error = None
  writable = [p for p in index_paths(shard, cache_dir) if not filesystem.is_url(p)]
  for path in writable:
    try:
      if not os.path.isdir(os.path.dirname(path)):
        os.makedirs(os.path.dirname(path))
      save(index, keys, stat, path)
      break
    except OSError as e:
      last_error = e
  else:
    _log.warning("input: the index of %s cannot be saved beside it nor in %s (%s): it is rebuilt every time",
                 quote(shard), cache_dir or cache_folder(), last_error)
  return index
