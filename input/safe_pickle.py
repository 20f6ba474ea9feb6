"""A restricted unpickler for the CIFAR python-pickle files: data only, never code.

A pickle can name any importable callable and have it called while loading (e.g. os.system). CIFAR files only need
dicts, lists, bytes, str, ints and numpy arrays, so `find_class` admits exactly the numpy globals that rebuild an
array (and `_codecs.encode`, which Python 3's protocol-2 pickles use for bytes) and refuses every other global.
"""
import importlib
import pickle
import warnings

from input import filesystem
from input.errors import InputError

# (module, name) pairs a numpy array or bytes object needs to be rebuilt. numpy 2 spells numpy.core as numpy._core;
# files written by either are accepted on both stacks.
_ALLOWED = frozenset([
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
])


class UnsafePickleError(InputError):
  """A pickle that names a global outside the allowed set; the message names the file and the global."""


class _CifarUnpickler(pickle.Unpickler):

  def __init__(self, f, path):
    pickle.Unpickler.__init__(self, f, encoding="bytes")
    self._path = path

  def find_class(self, module, name):
    if (module, name) not in _ALLOWED:
      raise UnsafePickleError(
          "%s: refused pickle global %s.%s (a CIFAR pickle holds only dicts, lists, bytes, ints and numpy "
          "arrays; this file is not a CIFAR batch or was tampered with)" % (self._path, module, name))
    return _resolve(module, name)


def _resolve(module, name):
  candidates = [module]
  if module.startswith("numpy._core"):
    candidates.append(module.replace("numpy._core", "numpy.core", 1))
  elif module.startswith("numpy.core"):
    candidates.insert(0, module.replace("numpy.core", "numpy._core", 1))  # numpy 2 warns on numpy.core
  for candidate in candidates:
    try:
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(importlib.import_module(candidate), name)
    except (ImportError, AttributeError):
      continue
  raise pickle.UnpicklingError("cannot resolve %s.%s" % (module, name))


def load(path):
  """Loads one CIFAR pickle file (keys stay bytes, as the format was written by Python 2).

  Raises UnsafePickleError for any non-data global and ValueError for a file that is not a pickle.
  """
  with filesystem.open_read(path) as f:
    try:
      return _CifarUnpickler(f, path).load()
    except UnsafePickleError:
      raise
    except Exception as e:  # truncated/garbage files raise a zoo of exception types
      raise InputError("%s: not a readable CIFAR pickle (%s: %s)" % (path, type(e).__name__, e))
