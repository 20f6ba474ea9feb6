"""The restricted unpickler loads real CIFAR data and refuses pickles that would run code."""
import os
import pickle

import numpy as np
import pytest

from input import safe_pickle
from input.datasets import open_dataset


class _RunsShell(object):

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, ("touch %s" % self.marker,))


class _CallsEval(object):

  def __reduce__(self):
    return (eval, ("__import__('os').getpid()",))


def test_malicious_reduce_is_refused_and_never_runs(tmp_path):
  marker = tmp_path / "pwned"
  path = tmp_path / "data_batch_1"
  with open(str(path), "wb") as f:
    pickle.dump({b"data": _RunsShell(str(marker)), b"labels": [0]}, f, protocol=2)
  with pytest.raises(safe_pickle.UnsafePickleError) as info:
    safe_pickle.load(str(path))
  message = str(info.value)
  assert str(path) in message and "system" in message  # names the file and the refused global
  assert not marker.exists()
  with pytest.raises(ValueError, match="refused pickle global"):  # and through the dataset entry point
    open_dataset("cifar10", str(tmp_path))
  assert not marker.exists()


def test_builtins_eval_is_refused(tmp_path):
  path = str(tmp_path / "test_batch")
  with open(path, "wb") as f:
    pickle.dump([_CallsEval()], f, protocol=4)
  with pytest.raises(safe_pickle.UnsafePickleError, match=r"builtins\.eval"):
    safe_pickle.load(path)


@pytest.mark.parametrize("protocol", [2, 4])
def test_numpy_arrays_and_bytes_load(tmp_path, protocol):
  path = str(tmp_path / "batch")
  value = {b"data": np.arange(12, dtype=np.uint8).reshape(3, 4), b"labels": [1, 2, 3], b"name": b"x", "s": 1.5}
  with open(path, "wb") as f:
    pickle.dump(value, f, protocol=protocol)
  loaded = safe_pickle.load(path)
  assert np.array_equal(loaded[b"data"], value[b"data"]) and loaded[b"labels"] == [1, 2, 3]
  assert loaded[b"name"] == b"x"


def test_garbage_file_is_a_clear_value_error(tmp_path):
  path = str(tmp_path / "data_batch_1")
  with open(path, "wb") as f:
    f.write(b"\x80\x02}q\x00(X")  # truncated pickle
  with pytest.raises(ValueError, match="not a readable CIFAR pickle"):
    safe_pickle.load(path)
