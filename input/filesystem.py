"""Where a dataset path lives, and how it is listed and read: local paths through os and open(), URLs through
tf.io.gfile.

  path                              is       read with
  /data/x, data/x                   local    os, open(), OpenCV: the code paths of local data, unchanged
  file:///data/x                    local    the same; the URL becomes /data/x (to_local)
  gs://b/x, s3://b/x, hdfs://h/x    a URL    tf.io.gfile (TensorFlow is imported on first use only)
  ram://x                           a URL    tf.io.gfile: TensorFlow 2.x's in-memory file system (one per process)

Which schemes a stack has: TF 1.15 builds in gs://, s3:// and hdfs:// (hdfs needs libhdfs and a JVM at run time);
TF 2.x builds in gs:// and ram:// only, and s3://, hdfs://, http:// come with the tensorflow-io package, imported
here when a URL asks for a scheme TensorFlow lacks. A URL of a scheme this process cannot read is one DataError
naming the scheme and what to install (check_url); a URL that cannot be reached (no network, no credentials) is
one DataError with TensorFlow's first line. Directories on object stores are name prefixes: a listing may mark
them with a trailing "/" (list_marked keeps that as a hint, so a listing needs no stat per entry).

Forked input workers read URLs through tf.io.gfile as well; TensorFlow is imported in the parent before the fork.
Tested on both stacks with file:// and ram:// (which a child sees as it was at the fork).
"""
import collections
import io
import os
import re
import stat as stat_lib

from input.errors import DataError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# What to install for a scheme TensorFlow lacks.
_TFIO_SCHEMES = ("s3", "hdfs", "viewfs", "har", "http", "https", "az")
_checked = set()

Stat = collections.namedtuple("Stat", ["size", "mtime_ns", "is_dir"])
Stat.__doc__ = """What a listing needs of a file: size in bytes, modification time in ns (0 when the file system
keeps none, as ram://), whether it is a directory."""


def cache_base(base=None):
  """The base folder of the on-disk caches (listings, shard indexes, compiled XLA clusters): `base`, else
  $XDG_CACHE_HOME, else ~/.cache."""
  return base or os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")


def scheme(path):
  """The lower-case scheme of a URL ("gs", "file", ...), or "" for a plain path."""
  m = _SCHEME.match(path or "")
  return m.group(1).lower() if m else ""


def is_url(path):
  """True for a URL read through tf.io.gfile: any scheme but file://."""
  return scheme(path) not in ("", "file")


def to_local(path):
  """`path` with a file:// URL turned into its plain path (file:///a/b and file://localhost/a/b -> /a/b) and a
  trailing "/" of another URL dropped; a plain path or None unchanged. DataError for file://host/... of another
  host."""
  kind = scheme(path)
  if not kind:
    return path
  rest = path[len(kind) + 3:]
  if kind != "file":
    stripped = rest.rstrip("/")
    return path[:len(kind) + 3] + stripped if stripped else path
  if rest.startswith("localhost/"):
    rest = rest[len("localhost"):]
  if not rest.startswith("/"):
    raise DataError("%s: a file:// URL of another host (%r): expected file:///absolute/path" %
                    (path, rest.split("/", 1)[0]))
  return rest


def _tf():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf


def _first_line(error):
  text = str(getattr(error, "message", None) or error).strip()
  return text.splitlines()[0] if text else type(error).__name__


def _missing_scheme(url, kind, version):
  """The DataError for a URL whose scheme this TensorFlow has no file system for."""
  if kind == "ram":
    return DataError("%s: TensorFlow %s has no 'ram' file system (the in-memory one exists from TensorFlow 2 on): "
                     "expected a local path, file:// or gs:// here" % (url, version))
  if kind in _TFIO_SCHEMES:
    return DataError("%s: TensorFlow %s has no '%s' file system: install tensorflow-io (pip install tensorflow-io, "
                     "the release built for this TensorFlow), which provides s3://, hdfs:// and http://" %
                     (url, version, kind))
  return DataError("%s: TensorFlow %s has no '%s' file system: expected a local path, file://, or a URL of a "
                   "file system TensorFlow provides (gs://; s3://, hdfs:// with TF 1.15 or tensorflow-io)" %
                   (url, version, kind))


def _provides(tf, url, kind):
  registered = getattr(tf.io.gfile, "get_registered_schemes", None)
  if registered is not None:  # TF 2.x
    return kind in registered()
  try:  # TF 1.15 answers an unknown scheme with UnimplementedError, at once
    tf.io.gfile.exists(url)
  except tf.errors.UnimplementedError:
    return False
  except tf.errors.OpError:
    pass
  return True


def check_url(url):
  """Raises DataError (one line naming the scheme and what to install) unless this process can read `url`'s
  scheme; imports tensorflow_io, when installed, for a scheme TensorFlow itself lacks."""
  kind = scheme(url)
  if kind in _checked:
    return
  tf = _tf()
  if not _provides(tf, url, kind):
    try:
      import tensorflow_io  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    except ImportError:
      pass
    if not _provides(tf, url, kind):
      raise _missing_scheme(url, kind, tf.__version__)
  _checked.add(kind)


def _call(what, path, *args):
  """tf.io.gfile.<what>(path, *args) with TensorFlow's errors as one-line DataErrors (NotFoundError as
  FileNotFoundError, which callers treat as the local one)."""
  check_url(path)
  tf = _tf()
  try:
    return getattr(tf.io.gfile, what)(path, *args)
  except tf.errors.NotFoundError as e:
    raise FileNotFoundError(2, _first_line(e), path)
  except tf.errors.OpError as e:
    raise DataError("%s: cannot reach it (%s)" % (path, _first_line(e)))


def exists(path):
  if not is_url(path):
    return os.path.exists(path)
  return bool(_call("exists", path))


def stat(path):
  """The Stat of `path`; FileNotFoundError when it does not exist."""
  if not is_url(path):
    info = os.stat(path)
    return Stat(info.st_size, info.st_mtime_ns, stat_lib.S_ISDIR(info.st_mode))
  info = _call("stat", path)
  return Stat(int(info.length), int(info.mtime_nsec), bool(info.is_directory))


def isdir(path):
  if not is_url(path):
    return os.path.isdir(path)
  try:
    return bool(_call("isdir", path))
  except FileNotFoundError:
    return False


def isfile(path):
  if not is_url(path):
    return os.path.isfile(path)
  try:
    return not stat(path).is_dir
  except FileNotFoundError:
    return False


def list_marked(folder):
  """[(name, marked)] of the entries of `folder`, unsorted; marked: True when the listing itself says the entry is
  a directory (a trailing "/" of an object store's prefix), else None (unknown: ask isdir). A local folder's
  entries are all None."""
  if not is_url(folder):
    return [(name, None) for name in os.listdir(folder)]
  out = []
  for name in _call("listdir", folder):
    name = name if isinstance(name, str) else name.decode("utf-8", "surrogateescape")
    out.append((name.rstrip("/"), True if name.endswith("/") else None))
  return out


def listdir(folder):
  """The entry names of `folder` (unsorted), as os.listdir."""
  return [name for name, _ in list_marked(folder)]


def join(folder, *names):
  return os.path.join(folder, *names)


def abspath(path):
  """os.path.abspath for a local path; a URL unchanged."""
  return path if is_url(path) else os.path.abspath(path)


def read_file(path, limit=None):
  """The bytes of a file (at most `limit` of them)."""
  if not is_url(path):
    with open(path, "rb") as f:
      return f.read() if limit is None else f.read(limit)
  check_url(path)
  tf = _tf()
  try:
    with tf.io.gfile.GFile(path, "rb") as f:
      return f.read() if limit is None else f.read(limit)
  except tf.errors.NotFoundError as e:
    raise FileNotFoundError(2, _first_line(e), path)
  except tf.errors.OpError as e:
    raise DataError("%s: cannot read it (%s)" % (path, _first_line(e)))


def open_read(path, buffering=-1):
  """A buffered binary file object for reading (seek, read, read1, tell), as open(path, "rb", buffering): for a
  URL over tf.io.gfile.GFile, with TensorFlow's errors surfacing as OSError (NotFoundError as FileNotFoundError)."""
  if not is_url(path):
    return open(path, "rb", buffering=buffering)
  check_url(path)
  return io.BufferedReader(_RemoteFile(path), buffering if buffering > 0 else io.DEFAULT_BUFFER_SIZE)


class _RemoteFile(io.RawIOBase):
  """A read-only tf.io.gfile.GFile whose TensorFlow errors are OSErrors, for readers written against open()."""

  def __init__(self, path):
    super(_RemoteFile, self).__init__()
    self.name = path
    self._tf = _tf()
    self._file = self._guard(lambda: self._tf.io.gfile.GFile(path, "rb"))

  def _guard(self, fn):
    try:
      return fn()
    except self._tf.errors.NotFoundError as e:
      raise FileNotFoundError(2, _first_line(e), self.name)
    except self._tf.errors.OpError as e:
      raise OSError(5, _first_line(e), self.name)

  def readable(self):
    return True

  def seekable(self):
    return True

  def read(self, size=-1):
    return self._guard(lambda: self._file.read(-1 if size is None or size < 0 else size))

  def readall(self):
    return self.read(-1)

  def readinto(self, buffer):
    data = self.read(len(buffer))
    buffer[:len(data)] = data
    return len(data)

  def seek(self, offset, whence=io.SEEK_SET):
    if whence == io.SEEK_END:
      offset += self._guard(self._file.size)
    elif whence == io.SEEK_CUR:
      offset += self.tell()
    self._guard(lambda: self._file.seek(offset))
    return offset

  def tell(self):
    return self._guard(self._file.tell)

  def close(self):
    if not self.closed:
      self._file.close()
    super(_RemoteFile, self).close()
