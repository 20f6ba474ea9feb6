"""One writer per run folder: an advisory lock (fcntl.flock) on <model_dir>/.run.lock, held while the run lives.

Two trainers on one --model_dir overwrite each other's checkpoints, lose TensorBoard points and interleave
train.log. RunLock creates the folder (race-free: os.makedirs(exist_ok=True)), opens the lock file and takes an
exclusive, non-blocking flock; the holder writes "pid <pid> host <host>" into the file. A second trainer gets a
RunLockedError: one line naming the folder and the holder's pid and host.

The kernel releases a flock when the last descriptor of the open file goes away, so a run killed with kill -9 leaves
no lock behind (its forked input workers inherit the descriptor, but they die with it); the file stays, harmless,
and the next run takes it over. Descriptors are not inherited across exec. The lock is advisory: it keeps out only
processes that take it too. On NFS, Linux emulates flock with byte-range locks, which also work across machines.
"""
import errno
import fcntl
import os
import socket
import time

from launch import errors

LOCK_NAME = ".run.lock"


class RunLockedError(errors.UsageError):
  """Another live process holds the run folder's lock; the message is one line naming the folder and the holder."""


def _holder(fd):
  """What the lock file says about its holder, e.g. "pid 1234 host node1"."""
  for _ in range(5):  # the holder truncates, then writes: give it a moment
    text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    if text:
      return " ".join(text.split())
    time.sleep(0.02)
  return "an unknown process"


class RunLock(object):
  """The lock of one run folder; a context manager (acquire on enter, release on exit).

  Attributes:
    model_dir: the run folder.
    path: the lock file inside it.
  """

  def __init__(self, model_dir):
    self.model_dir = model_dir
    self.path = os.path.join(model_dir, LOCK_NAME)
    self._fd = None

  def acquire(self):
    """Creates the folder if needed and takes the lock; returns self.

    Raises RunLockedError if another process holds it, ValueError (one line) if model_dir is a file or cannot be
    created.
    """
    if self._fd is not None:
      return self
    if os.path.exists(self.model_dir) and not os.path.isdir(self.model_dir):
      raise ValueError("model_dir %s is a file: expected a folder for the run's checkpoints and logs" % self.model_dir)
    try:
      os.makedirs(self.model_dir, exist_ok=True)
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
      raise ValueError("model_dir %s cannot be used (%s): expected a writable folder" %
                       (self.model_dir, e.strerror or e))
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      holder = _holder(fd) if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES) else None
      os.close(fd)
      if holder is None:
        raise ValueError("model_dir %s cannot be locked (%s)" % (self.model_dir, e.strerror or e))
      raise RunLockedError("model_dir %s is in use by another run (%s holds %s): wait for it to end or choose another "
                           "--model_dir" % (self.model_dir, holder, LOCK_NAME))
    os.ftruncate(fd, 0)
    os.pwrite(fd, ("pid %d host %s\n" % (os.getpid(), socket.gethostname())).encode("utf-8"), 0)
    self._fd = fd
    return self

  @property
  def held(self):
    return self._fd is not None

  def release(self):
    """Gives the lock up (the file stays, emptied); safe to call more than once."""
    if self._fd is None:
      return
    fd, self._fd = self._fd, None
    try:
      os.ftruncate(fd, 0)  # the file names only a live holder
    except OSError:
      pass
    fcntl.flock(fd, fcntl.LOCK_UN)  # also for forked children that share this open file
    os.close(fd)

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()
