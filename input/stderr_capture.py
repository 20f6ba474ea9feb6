"""What C libraries write to stderr during one call (libjpeg, libpng, OpenCV), captured instead of printed.

libjpeg and libpng report problems by writing to file descriptor 2 ("Corrupt JPEG data: premature end of data
segment", "libpng error: IDAT: CRC error"), without the file's name and again on every retry. Around a decode, fd 2
points at a private unlinked temporary file, so the text can be attributed to the file that caused it (or be the
reason it is refused) instead of reaching the terminal. fd 2 belongs to the whole process: a lock makes captures
one at a time, and whatever another thread writes during a capture lands in it too (input workers are single
threaded; in a trainer decoding in-process, workers=0, a TensorFlow message may get attributed to an image).
"""
import contextlib
import os
import tempfile
import threading

_MAX_BYTES = 4096
_lock = threading.Lock()
_sink = {"pid": None, "fd": None}


class Captured(object):
  """Attributes:
    text: what was written to fd 2 during the capture (stripped, at most 4 KB), "" when nothing was.
  """

  def __init__(self):
    self.text = ""


def _sink_fd():
  # One sink per process: after fork the parent's sink is shared with the child, and two processes truncating
  # one file would lose each other's text.
  if _sink["pid"] != os.getpid():
    handle = tempfile.TemporaryFile()
    _sink["fd"] = os.dup(handle.fileno())
    handle.close()
    _sink["pid"] = os.getpid()
  return _sink["fd"]


@contextlib.contextmanager
def captured_stderr():
  """Context manager yielding a Captured whose .text is filled in when the block ends."""
  result = Captured()
  with _lock:
    try:
      sink = _sink_fd()
      os.ftruncate(sink, 0)
      os.lseek(sink, 0, os.SEEK_SET)
      saved = os.dup(2)
    except OSError:  # no fd 2 (a daemon) or no temporary directory: run uncaptured
      saved = None
    if saved is None:
      yield result
      return
    os.dup2(sink, 2)
    try:
      yield result
    finally:
      os.dup2(saved, 2)
      os.close(saved)
      size = os.lseek(sink, 0, os.SEEK_END)
      if size:
        os.lseek(sink, 0, os.SEEK_SET)
        result.text = os.read(sink, min(size, _MAX_BYTES)).decode("utf-8", "replace").strip()
