"""Encoded image files -> uint8 RGB arrays, with OpenCV.

Answers: which files count as images, how big is a JPEG before decoding it, and how is a file decoded (optionally at
1/2, 1/4 or 1/8 scale through libjpeg's DCT scaling, which is several times faster than a full decode when the crop
we need is much larger than the output size).
"""
import os

import cv2
import numpy as np

# Parallelism is one process per worker; OpenCV's own thread pool would oversubscribe the cores, and a pool started
# in the parent (by a decode in the trainer's thread, workers=0) does not survive fork(): a forked worker that then
# touches OpenCV's thread settings waits forever on the dead pool's lock. One thread, set before any fork.
cv2.setNumThreads(1)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

# EXIF orientation is ignored on purpose: the crop is planned on the stored (SOF) size before decoding, and
# tf.image.decode_jpeg ignores it too, so both pipelines see the same pixels.
_FLAGS = {
    1: cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION,
    2: cv2.IMREAD_REDUCED_COLOR_2 | cv2.IMREAD_IGNORE_ORIENTATION,
    4: cv2.IMREAD_REDUCED_COLOR_4 | cv2.IMREAD_IGNORE_ORIENTATION,
    8: cv2.IMREAD_REDUCED_COLOR_8 | cv2.IMREAD_IGNORE_ORIENTATION,
}

# Start-of-frame markers that carry the image size (C4 DHT, C8 JPG and CC DAC are not frames).
_SOF_MARKERS = frozenset([0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF])


class DecodeError(ValueError):
  """A file that is not a readable image (zero bytes, truncated, corrupt, unknown format).

  Attributes:
    path: the file (or a description such as "cifar10 train #12").
    reason: a short phrase for the warning line.
  """

  def __init__(self, path, reason):
    super(DecodeError, self).__init__("%s: %s" % (path, reason))
    self.path = path
    self.reason = reason


def is_image_file(name):
  """True if the file name has one of IMAGE_EXTENSIONS (case-insensitive)."""
  return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def is_jpeg(data):
  return len(data) > 3 and data[0] == 0xFF and data[1] == 0xD8


def jpeg_size(data):
  """(height, width) read from a JPEG's start-of-frame header, or None if `data` is not a parseable JPEG."""
  if not is_jpeg(data):
    return None
  pos, end = 2, len(data)
  while pos + 9 <= end:
    if data[pos] != 0xFF:
      return None
    marker = data[pos + 1]
    if marker == 0xFF:  # fill byte
      pos += 1
      continue
    if marker in (0x01,) or 0xD0 <= marker <= 0xD7:  # markers without a length field
      pos += 2
      continue
    length = (data[pos + 2] << 8) | data[pos + 3]
    if marker in _SOF_MARKERS:
      height = (data[pos + 5] << 8) | data[pos + 6]
      width = (data[pos + 7] << 8) | data[pos + 8]
      return (height, width) if height and width else None
    if marker == 0xDA:  # start of scan before any frame header: malformed
      return None
    pos += 2 + length
  return None


def read_bytes(path):
  """The file's bytes; an unreadable or zero-byte file raises DecodeError."""
  try:
    with open(path, "rb") as f:
      data = f.read()
  except (IOError, OSError) as e:
    raise DecodeError(path, "cannot read (%s)" % (e.strerror or e))
  if not data:
    raise DecodeError(path, "zero-byte file")
  return data


def decode_bgr(data, path, reduce=1):
  """Decodes encoded bytes to a uint8 BGR HxWx3 array (OpenCV's order), `reduce` in {1,2,4,8} (JPEG only).

  Raises DecodeError for empty, truncated or undecodable data. libjpeg fills a truncated JPEG with gray and only
  warns, so a JPEG without an end-of-image marker near its end is refused here before decoding.
  """
  if not data:
    raise DecodeError(path, "zero-byte file")
  if is_jpeg(data) and b"\xff\xd9" not in data[-1024:].rstrip(b"\x00\r\n "):
    raise DecodeError(path, "truncated JPEG (no end-of-image marker)")
  buf = np.frombuffer(data, dtype=np.uint8)
  try:
    image = cv2.imdecode(buf, _FLAGS[reduce if is_jpeg(data) else 1])
  except cv2.error as e:
    raise DecodeError(path, "OpenCV cannot decode it (%s)" % str(e).strip().splitlines()[-1])
  if image is None or image.size == 0:
    raise DecodeError(path, "not a decodable image")
  if image.ndim == 2:
    image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
  return image


def decode_rgb(data, path):
  """Decodes encoded bytes to a full-size uint8 RGB HxWx3 array; raises DecodeError."""
  return cv2.cvtColor(decode_bgr(data, path), cv2.COLOR_BGR2RGB)
