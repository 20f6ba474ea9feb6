"""Writing into the run folder when storage fails: a full disk, a quota, a read-only or vanished folder.

Every writer of the run folder (checkpoints, train.log, metrics.jsonl, TensorBoard) turns such a failure into one
StorageFailed: one line naming the folder, what was being written and why, and that the checkpoints written so far
are intact. A checkpoint never replaces the previous one in place (tf.train.Saver writes the data and the index
under temporary names and renames them, and rewrites its `checkpoint` state file the same way), so after the
space is freed the same command resumes from the last good checkpoint.
"""
import errno
import os

import tensorflow.compat.v1 as tf

from launch import errors

# errno -> what it means for a run folder, in the words of the one line.
REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOENT: "the folder no longer exists",
    errno.ESTALE: "the folder no longer exists (stale NFS handle)",
    errno.EIO: "an I/O error",
}


class StorageFailed(errors.RunStopped):
  """The run folder could not be written (exit code 1); the message is one line."""


def storage_errno(error):
  """The errno of `error` when it is a storage failure of REASONS (an OSError, or a TF error whose message carries
  the C library's text, e.g. "...; No space left on device"), else None."""
  if isinstance(error, (OSError, IOError)):
    return error.errno if error.errno in REASONS else None
  if isinstance(error, tf.errors.OpError):
    text = str(error.message)
    for number in REASONS:
      if os.strerror(number) in text:
        return number
  return None


def reason(error):
  """What a storage failure means in a few words, e.g. "the disk is full (ENOSPC)"; None for another error."""
  number = storage_errno(error)
  return None if number is None else "%s (%s)" % (REASONS[number], errno.errorcode[number])


def failure(error, what, folder, intact=None):
  """The StorageFailed for `error` (see storage_errno) met while writing `what` into `folder`, or None when
  `error` is not a storage failure. `intact`: the last good checkpoint to name in the line ("" when there is none
  yet, None when the writer does not know)."""
  number = storage_errno(error)
  if number is None:
    return None
  if intact:
    after = "the last good checkpoint %s is intact; " % os.path.basename(intact)
  elif intact is None:
    after = "the checkpoints written so far are intact; "
  else:
    after = "no checkpoint was written yet; "
  return StorageFailed(
      "cannot write %s to %s: %s (%s); %s%s" %
      (what, os.path.abspath(folder), REASONS[number], errno.errorcode[number], after, _advice(number)))


def _advice(number):
  if number in (errno.ENOSPC, errno.EDQUOT):
    return "free space and rerun the same command to resume"
  if number == errno.ENOENT:
    return "restore the folder (or choose another --model_dir) and rerun the same command"
  return "make the folder writable and rerun the same command to resume"


def check_writable(folder):
  """Raises errors.UsageError (one line naming the folder) unless a file can be created in `folder` now: the
  permission bits alone do not say so (root ignores them, a read-only mount does not)."""
  probe = os.path.join(folder, ".write_probe.%d" % os.getpid())
  try:
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
      os.write(fd, b"x")
    finally:
      os.close(fd)
    os.remove(probe)
  except OSError as e:
    reason = REASONS.get(e.errno, e.strerror or str(e))
    raise errors.UsageError("--model_dir=%s cannot be written now (%s): the run would lose its checkpoints; free "
                            "space or make it writable, or choose another --model_dir" %
                            (os.path.abspath(folder), reason))


class FolderWatch(object):
  """Notices that the run folder vanished (deleted, or unmounted) while the run has files open in it: those writes
  keep succeeding into nothing, so the loop asks after every sess.run.

  Attributes:
    folder: the run folder.
  """

  def __init__(self, folder):
    self.folder = folder
    self._identity = self._stat()

  def _stat(self):
    try:
      info = os.stat(self.folder)
    except OSError:
      return None
    return info.st_dev, info.st_ino

  def check(self, step, last_checkpoint):
    """Raises StorageFailed when the folder is gone or is another folder than the one the run started in."""
    if self._identity is not None and self._stat() != self._identity:
      raise StorageFailed(
          "the run folder %s vanished at step %d (deleted, moved or unmounted): the steps since "
          "%s cannot be saved; restore the folder and rerun the same command to resume from it" %
          (os.path.abspath(self.folder), step, os.path.basename(last_checkpoint) if last_checkpoint else "the start"))
