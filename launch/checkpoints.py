"""The run's checkpoints: every global variable (model, optimizer slots, global step, loss scale, best accuracy).

Which checkpoint a run resumes from is decided from the files, not from TF's `checkpoint` state file alone (a
garbage state file would make tf.train.latest_checkpoint answer None, and the run would silently start afresh over
a folder that holds a model): every `model.ckpt-<step>` prefix in the folder is tried, newest first, and the first
that is readable and holds every variable of the graph with its shape is restored; each one passed over is named
in a warning line. When the folder holds checkpoints but none can be restored, the run stops with one line (exit 2)
and deletes nothing.

A save that fails for lack of space (or a read-only or vanished folder) removes its own half-written files and
raises launch.storage.StorageFailed; the previous checkpoint stays valid because tf.train.Saver writes the data and
the index under temporary names and renames them, and rewrites the state file the same way.
"""
import errno
import os
import re

from absl import logging
import numpy as np
import tensorflow.compat.v1 as tf

from launch import errors
from launch import storage

NAME = "model.ckpt"
_FILE = re.compile(r"^model\.ckpt-(\d+)\.(index|meta|data-(\d{5})-of-(\d{5}))$")
# What a failed save can leave behind: the Saver's temporary data and index (SaveV2 removes them itself when it
# can), its sharded temporary folder, and file_io.atomic_write_string_to_file's temporary state file and meta graph.
_LEFTOVER = (r"^(model\.ckpt-STEP(\.(index|data-\d{5}-of-\d{5})\.tempstate\d+|_temp_[0-9a-f]+|\.meta\.tmp[0-9a-f]+)|"
             r"checkpoint\.tmp[0-9a-f]+)$")


class NoUsableCheckpoint(errors.UsageError):
  """The run folder holds checkpoints but none of them can be restored (exit code 2)."""


class Checkpoints(object):
  """A tf.train.Saver writing <model_dir>/model.ckpt-<step>, keeping the last `keep`.

  Attributes:
    model_dir: the run folder.
    last_saved_step, last_saved_path: the step and prefix of the last checkpoint written (or restored) by this
      object (None before the first).
  """

  def __init__(self, model_dir, keep):
    self.model_dir = model_dir
    self.prefix = os.path.join(model_dir, NAME)
    self.variables = tf.global_variables()
    self.saver = tf.train.Saver(self.variables, max_to_keep=keep)
    self.last_saved_step = self.last_saved_path = None

  def save(self, sess, step):
    """Writes a checkpoint of `step` (once per step); returns its path, or None when it was already written.

    Raises launch.storage.StorageFailed (one line) when the folder cannot take it; nothing half-written stays.
    """
    if step == self.last_saved_step:
      return None
    try:
      path = self.saver.save(sess, self.prefix, global_step=step)
    except (tf.errors.OpError, OSError) as e:
      remove_leftovers(self.model_dir, step)
      failed = storage.failure(e, "checkpoint %s-%d" % (NAME, step), self.model_dir, self.last_saved_path or "")
      if failed is None:
        raise
      raise failed from None
    except ValueError:
      # TF's Saver says "Parent directory of ... doesn't exist, can't save" when the folder vanished mid-save.
      if os.path.isdir(self.model_dir):
        raise
      gone = OSError(errno.ENOENT, os.strerror(errno.ENOENT))
      raise storage.failure(gone, "checkpoint %s-%d" % (NAME, step), self.model_dir, self.last_saved_path or
                            "") from None
    self.last_saved_step, self.last_saved_path = step, path
    logging.info("checkpoint: %s", path)
    return path

  def restore(self, sess, path):
    self.saver.restore(sess, path)
    self.last_saved_step, self.last_saved_path = step_of_checkpoint(path), path

  def restore_newest(self, sess, prefixes):
    """Restores the newest of `prefixes` (checkpoint_prefixes) that can be resumed from, naming each one passed
    over in a warning line; returns its prefix. The graph's own shapes are checked before anything is restored, so
    only a checkpoint whose data turns out damaged while restoring costs a second restore.

    Raises NoUsableCheckpoint (one line) when none can be restored; no file is touched.
    """
    expected = {v.op.name: v.shape.as_list() for v in self.variables}
    passed = []
    for prefix in prefixes:
      reason = problem(prefix, expected)
      if reason is None:
        try:
          self.restore(sess, prefix)
        except tf.errors.OpError as e:
          reason = "its data is damaged (%s)" % _first_line(e.message)
      if reason is None:
        self.saver.recover_last_checkpoints([p for p in reversed(prefixes) if _step(p) < _step(prefix)] + [prefix])
        return prefix
      passed.append("%s: %s" % (os.path.basename(prefix), reason))
      logging.warning("checkpoint %s cannot be resumed from: %s; trying the next older one", prefix, reason)
    raise NoUsableCheckpoint(
        "--model_dir=%s holds checkpoints but none can be resumed from (%s); nothing was deleted: move the damaged "
        "ones aside (or restore them from a copy) and rerun, or choose another --model_dir" %
        (os.path.abspath(self.model_dir), "; ".join(passed)))


def checkpoint_prefixes(model_dir):
  """Prefixes of every model.ckpt-<step> that has a file in `model_dir` (its index, data or meta graph), newest
  first; [] for a folder without checkpoints (or no folder)."""
  try:
    names = os.listdir(model_dir)
  except OSError:
    return []
  steps = {int(m.group(1)) for m in (_FILE.match(n) for n in names) if m}
  return [os.path.join(model_dir, "%s-%d" % (NAME, s)) for s in sorted(steps, reverse=True)]


def newest_readable(model_dir):
  """The newest checkpoint prefix of `model_dir` whose index, data files and global step can be read (its
  variables are not compared with any graph), or None."""
  for prefix in checkpoint_prefixes(model_dir):
    if problem(prefix) is None:
      return prefix
  return None


def problem(prefix, expected=None):
  """Why the checkpoint `prefix` cannot be resumed from, in a few words, or None when it can (as far as can be
  told without restoring: the data's checksums are checked by the restore).

  expected: {variable name: shape} of the graph; when given, every one must be in the checkpoint with its shape.
  """
  folder, base = os.path.split(prefix)
  if not os.path.isfile(prefix + ".index"):
    return "its .index file is missing"
  try:
    reader = tf.train.NewCheckpointReader(prefix)
    shapes, dtypes = reader.get_variable_to_shape_map(), reader.get_variable_to_dtype_map()
  except tf.errors.OpError as e:
    return "its index is unreadable (%s)" % _first_line(e.message)
  if "global_step" not in shapes:
    return "it holds no global_step (not a checkpoint of launch.train)"
  if expected is not None:
    wrong = _mismatch(shapes, expected)
    if wrong:
      return "it is a checkpoint of another model (%s)" % wrong
  data = sorted(n for n in os.listdir(folder or ".") if n.startswith(base + ".data-") and _FILE.match(n))
  shards = {int(_FILE.match(n).group(4)) for n in data}
  if not data or len(shards) != 1 or len(data) != shards.pop():
    return "its .data files are missing or incomplete"
  # Tensors are stored back to back without padding: a data file shorter than their bytes was truncated.
  needed = sum(int(np.prod(shape)) * dtypes[name].size for name, shape in shapes.items() if dtypes[name] != tf.string)
  held = sum(os.path.getsize(os.path.join(folder, n)) for n in data)
  if held < needed:
    return "its .data is truncated (%d of at least %d bytes)" % (held, needed)
  try:
    reader.get_tensor("global_step")
  except tf.errors.OpError as e:
    return "its data is unreadable (%s)" % _first_line(e.message)
  return None


def _mismatch(shapes, expected):
  """A few words naming the graph's variables that are missing from a checkpoint or have another shape there."""
  missing = sorted(name for name in expected if name not in shapes)
  other = sorted(name for name in expected if name in shapes and list(shapes[name]) != list(expected[name]))
  parts = []
  if missing:
    parts.append("%d variables of this model missing, e.g. %s" % (len(missing), missing[0]))
  if other:
    name = other[0]
    parts.append("%d with other shapes, e.g. %s %s, this model %s" %
                 (len(other), name, list(shapes[name]), list(expected[name])))
  return "; ".join(parts)


def remove_leftovers(model_dir, step):
  """Removes what a failed save of `step` left in `model_dir` (temporary files only: never a complete file)."""
  pattern = re.compile(_LEFTOVER.replace("STEP", str(step)))
  try:
    names = os.listdir(model_dir)
  except OSError:
    return
  for name in names:
    if pattern.match(name):
      path = os.path.join(model_dir, name)
      try:
        if os.path.isdir(path):
          for inner in os.listdir(path):
            os.remove(os.path.join(path, inner))
          os.rmdir(path)
        else:
          os.remove(path)
      except OSError:
        logging.debug("could not remove %s", path, exc_info=True)


def _step(prefix):
  return int(prefix.rsplit("-", 1)[1])


def _first_line(text):
  return str(text).strip().splitlines()[0] if str(text).strip() else "no details"


def step_of_checkpoint(path):
  """The global step stored in a checkpoint of ours (0 when there is none)."""
  if not path:
    return 0
  return int(tf.train.load_variable(path, "global_step"))
