"""Encoded image files -> uint8 arrays with OpenCV, and every check that comes before a pixel is decoded.

`decode_image(path, max_pixels)` is the one entry point for a file on disk, shared by the training pipeline and
tools: it reads only regular files (a FIFO, a directory or a device is refused without blocking), reads the header
(image_headers) and refuses a file that is not a JPEG, PNG, BMP or WebP, that declares more than `max_pixels`
pixels (a decompression bomb: refused before anything is allocated), or a JPEG that ends before its end-of-image
marker or holds too little data for its size (libjpeg would silently fill the rest with gray). What libjpeg or libpng
print while decoding is captured (stderr_capture): it becomes the reason when the decode fails, and "premature end
of data" from libjpeg refuses the file as truncated. The pipeline itself calls read_bytes, check_header and
decode_bgr separately, to plan its crop on the header size and decode a JPEG at 1/2, 1/4 or 1/8 scale through
libjpeg's DCT scaling when the crop is that much larger than the output.
"""
import logging
import os
import stat

import cv2
import numpy as np

from input import filesystem
from input import image_headers
from input import stderr_capture
from input.errors import InputError
from input.messages import quote

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# PIL's Image.MAX_IMAGE_PIXELS (its decompression-bomb guard): 1 GiB / 4 / 3, about 89 M pixels.
DEFAULT_MAX_PIXELS = 89478485

# EXIF orientation is ignored on purpose: the crop is planned on the stored (SOF) size before decoding, and
# tf.image.decode_jpeg ignores it too, so both pipelines see the same pixels.
_FLAGS = {
    1: cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION,
    2: cv2.IMREAD_REDUCED_COLOR_2 | cv2.IMREAD_IGNORE_ORIENTATION,
    4: cv2.IMREAD_REDUCED_COLOR_4 | cv2.IMREAD_IGNORE_ORIENTATION,
    8: cv2.IMREAD_REDUCED_COLOR_8 | cv2.IMREAD_IGNORE_ORIENTATION,
}
_NOT_REGULAR = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))

_log = logging.getLogger(__name__)

jpeg_size = image_headers.jpeg_size


class DecodeError(InputError):
  """A file that is not a readable image (missing, not a regular file, zero bytes, truncated, corrupt, unknown
  format, too many pixels).

  Attributes:
    path: the file (or a description such as "cifar10 train #12").
    reason: a short phrase for the warning line.
  """

  def __init__(self, path, reason):
    super(DecodeError, self).__init__("%s: %s" % (quote(path), reason))
    self.path = path
    self.reason = reason


def is_image_file(name):
  """True if the file name has one of IMAGE_EXTENSIONS (case-insensitive)."""
  return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def file_kind(mode):
  """'a directory', 'a FIFO', ... for a stat mode that is not a regular file's."""
  for test, name in _NOT_REGULAR:
    if test(mode):
      return name
  return "not a regular file"


def read_bytes(path, limit=None):
  """The bytes of a regular file (at most `limit` of them); DecodeError for anything else (missing, dangling
  symlink, directory, FIFO, device, unreadable, zero bytes). A URL (input/filesystem.py) is read through
  tf.io.gfile."""
  if filesystem.is_url(path):
    return _read_url(path, limit)
  try:
    # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, forever. The type is checked on
    # the open file, so nothing can swap the file between the check and the read.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
  except FileNotFoundError:
    raise DecodeError(path, "dangling symlink" if os.path.islink(path) else "does not exist")
  except OSError as e:
    raise DecodeError(path, "cannot open (%s)" % (e.strerror or e))
  mode = os.fstat(fd).st_mode
  if not stat.S_ISREG(mode):
    os.close(fd)
    raise DecodeError(path, "%s, not a regular file" % file_kind(mode))
  with os.fdopen(fd, "rb") as f:
    try:
      data = f.read() if limit is None else f.read(limit)
    except OSError as e:
      raise DecodeError(path, "cannot read (%s)" % (e.strerror or e))
  if not data:
    raise DecodeError(path, "zero-byte file")
  return data


def _read_url(path, limit):
  try:
    data = filesystem.read_file(path, limit)
  except FileNotFoundError:
    raise DecodeError(path, "does not exist")
  except (OSError, InputError) as e:
    raise DecodeError(path, "cannot read (%s)" % (getattr(e, "strerror", None) or str(e).split(": ", 1)[-1]))
  if not data:
    raise DecodeError(path, "zero-byte file")
  return data


def check_header(data, path, max_pixels=DEFAULT_MAX_PIXELS):
  """The image_headers.Header of `data`; DecodeError for zero bytes, an unknown or malformed format, a truncated
  JPEG, or more than `max_pixels` declared pixels (None = no budget)."""
  if not data:
    raise DecodeError(path, "zero-byte file")
  try:
    header = image_headers.read_header(data)
  except image_headers.HeaderError as e:
    raise DecodeError(path, str(e))
  pixels = header.height * header.width
  if max_pixels and pixels > max_pixels:
    raise DecodeError(
        path, "%s of %dx%d = %d pixels exceeds the pixel budget of %d (max_pixels; a decompression bomb?)" %
        (header.format.upper(), header.width, header.height, pixels, max_pixels))
  if header.too_short:
    raise DecodeError(
        path,
        "truncated JPEG: too little image data for the %dx%d image its header declares" % (header.width, header.height))
  return header


def _one_line(text):
  return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def decode_bgr(data, path, reduce=1, max_pixels=DEFAULT_MAX_PIXELS, header=None):
  """Decodes encoded bytes to a uint8 BGR HxWx3 array (OpenCV's order); `reduce` in {1, 2, 4, 8} (JPEG only).

  `header` is check_header's result when the caller already has it. Raises DecodeError (see check_header; also
  for data OpenCV cannot decode and for a JPEG libjpeg finds truncated).
  """
  if header is None:
    header = check_header(data, path, max_pixels)
  buf = np.frombuffer(data, dtype=np.uint8, count=header.end)  # a motion photo's appended video is not decoded
  failure = None
  with stderr_capture.captured_stderr() as said:
    try:
      image = cv2.imdecode(buf, _FLAGS[reduce if header.format == "jpeg" else 1])
    except cv2.error as e:
      image, failure = None, str(e).strip().splitlines()[-1]
  message = _one_line(said.text)
  if header.format == "jpeg" and "premature end" in message.lower():
    raise DecodeError(
        path, "truncated JPEG: its data ends before the %dx%d image is complete (libjpeg: %s)" %
        (header.width, header.height, message))
  if image is None or image.size == 0:
    raise DecodeError(path, "OpenCV cannot decode it (%s)" % (failure or message or "no image returned"))
  if message:
    _log.debug("input: %s decoded, the decoder said: %s", quote(path), message)
  if image.ndim == 2:
    image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
  return image


def decode_rgb(data, path, max_pixels=DEFAULT_MAX_PIXELS):
  """Decodes encoded bytes to a full-size uint8 RGB HxWx3 array; raises DecodeError."""
  return cv2.cvtColor(decode_bgr(data, path, max_pixels=max_pixels), cv2.COLOR_BGR2RGB)


def decode_image(path, max_pixels=DEFAULT_MAX_PIXELS):
  """The image file at `path` as a full-size uint8 RGB [H, W, 3] array, with every check of the training pipeline.

  Raises DecodeError(path, reason) for a missing path, a directory, FIFO or device, a zero-byte, truncated, corrupt
  or non-image file, and an image of more than `max_pixels` pixels (decided from its header, before decoding).
  """
  return decode_rgb(read_bytes(path), path, max_pixels)
