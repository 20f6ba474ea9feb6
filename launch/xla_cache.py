"""TensorFlow's persistent XLA compilation cache, so a run loads the clusters an earlier run compiled.

On TF 2.x `--kernels=xla` (the default there) puts each layer norm, bias + GELU and softmax chain in its own XLA
cluster, and the first loop compiles every one of them: for the Fashion-MNIST recipe that is 4-5 of its 8 s of
start-up. TensorFlow can keep the compiled executables on disk (TF_XLA_FLAGS=--tf_xla_persistent_cache_directory)
and load them in the next process whose clusters hash the same (docs/benchmarks.md: 8.0-8.6 s cold, 3.6 s warm).

The folder is <cache base>/vit_xla/tf<version>-<cpu>: TensorFlow keys an entry by the cluster's HLO and the device
type only, and XLA:CPU compiles for the host's instruction set, so one folder per TF version and CPU (its model name
and feature flags) keeps a shared home folder from handing AMX code to a CPU without it. TensorFlow writes each
entry to a temporary file and renames it into place, so ranks of one job may share the folder. It fails the run
on an entry it cannot parse (a truncated file: "Read less bytes than requested" at the cluster's xla_compile), so
enable() first removes every entry that is empty or not whole protobuf wire format. Off by default (--xla_cache):
TF 2.21 logs two or three harmless E-level lines for every cluster it loads from the folder.

Nothing here on TF 1.15: it has no such flag and aborts on a TF_XLA_FLAGS flag it does not know. Must run before
TensorFlow reads its XLA flags, once per process: before the first session, and (found by trying) before absl's
app.run calls main, so launch.train enables it from its flags parser.
"""
import glob
import hashlib
import logging
import os

from input import filesystem

FLAG = "--tf_xla_persistent_cache_directory"
_MIN_TF = (2, 12)  # the releases that know FLAG (TF 2.21 is this project's TF 2.x stack)
_STATE = {}  # the line of the last enable() that set TF_XLA_FLAGS


def _tf_version():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.__version__


def supported(version):
  """Whether TensorFlow `version` (a string) has the persistent XLA cache flag."""
  try:
    major_minor = tuple(int(p) for p in version.split(".")[:2])
  except ValueError:
    return False
  return major_minor >= _MIN_TF


def cpu_key(cpuinfo_path="/proc/cpuinfo"):
  """A short stable name for this CPU: a hash of its model name and feature flags ("unknown" when unreadable)."""
  try:
    with open(cpuinfo_path) as f:
      text = f.read(1 << 16)
  except (IOError, OSError):
    return "unknown"
  fields = {}
  for line in text.splitlines():
    key, _, value = line.partition(":")
    key = key.strip()
    if key in ("model name", "flags", "vendor_id") and key not in fields:
      fields[key] = " ".join(sorted(value.split())) if key == "flags" else value.strip()
  if not fields:
    return "unknown"
  return hashlib.sha1(repr(sorted(fields.items())).encode("utf-8")).hexdigest()[:12]


def folder(base=None, version=None):
  """The cache folder of this TensorFlow version and CPU under the cache base (see launch --cache_dir)."""
  version = version or _tf_version()
  return os.path.join(filesystem.cache_base(base), "vit_xla", "tf%s-%s" % (version, cpu_key()))


def _is_whole_proto(path):
  from google.protobuf import empty_pb2  # pylint: disable=g-import-not-at-top
  from google.protobuf.message import DecodeError  # pylint: disable=g-import-not-at-top
  with open(path, "rb") as f:
    data = f.read()
  try:
    empty_pb2.Empty().ParseFromString(data)  # every field unknown to Empty: only the wire format is checked
  except DecodeError:
    return False
  return bool(data)  # an empty entry parses, and TensorFlow then fails the run on its missing key


def prune(path):
  """Removes the entries of cache folder `path` that are empty or not whole protobuf messages; returns (kept,
  removed)."""
  kept = removed = 0
  for entry in glob.glob(os.path.join(path, "*.pb")):
    try:
      if _is_whole_proto(entry):
        kept += 1
        continue
      os.remove(entry)
      removed += 1
    except (IOError, OSError):  # gone meanwhile (another rank pruned it) or unreadable: TF will not read it either
      continue
  return kept, removed


def enabled_line():
  """The line of this process's enable() for the run's log, or None."""
  return _STATE.get("line")


def enable(base=None, environ=None, version=None):
  """Points TensorFlow's persistent XLA cache at folder(base) through TF_XLA_FLAGS; returns one line for the log
  (also kept for enabled_line), or None when nothing was set (TF 1.15, or TF_XLA_FLAGS already names a cache
  folder: the user's own)."""
  environ = os.environ if environ is None else environ
  version = version or _tf_version()
  flags = environ.get("TF_XLA_FLAGS", "")
  if not supported(version) or FLAG in flags:
    return None
  if base and filesystem.is_url(base):
    return _keep("xla cache: off (--cache_dir=%s is a URL; TensorFlow's XLA cache takes a local folder)" % base)
  path = folder(base, version)
  try:
    os.makedirs(path, exist_ok=True)
    probe = os.path.join(path, ".writable-%d" % os.getpid())
    with open(probe, "w"):
      pass
    os.remove(probe)
  except (IOError, OSError) as e:
    return _keep("xla cache: off (%s is not writable: %s); every run compiles its XLA clusters" %
                 (path, e.strerror or e))
  kept, removed = prune(path)
  environ["TF_XLA_FLAGS"] = ("%s %s=%s" % (flags, FLAG, path)).strip()
  damaged = "; %d damaged entries removed" % removed if removed else ""
  logging.debug("TF_XLA_FLAGS=%s", environ["TF_XLA_FLAGS"])
  return _keep("xla cache: %s (%d compiled clusters from earlier runs%s)" % (path, kept, damaged))


def _keep(line):
  _STATE["line"] = line
  return line
