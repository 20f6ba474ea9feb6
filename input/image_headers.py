"""What an encoded image says about itself before anything is decoded: its format, its size, and (JPEG) where its
data really ends.

Read from the headers only, so a decompression bomb (a small file declaring a huge image) is recognised without
allocating its pixels. Formats: JPEG (SOF frame header), PNG (IHDR), BMP (DIB header), WebP (VP8, VP8L or VP8X
chunk). A JPEG is walked segment by segment up to its end-of-image marker: data after that marker (the video a phone
appends to a "motion photo") is not part of the image, and a JPEG that runs out before the marker is truncated.
"""
import collections
import re
import struct

from input.errors import InputError

FORMATS = ("jpeg", "png", "bmp", "webp")

Header = collections.namedtuple("Header", ["format", "height", "width", "end", "too_short"])
Header.__doc__ = """What the header of one encoded image declares.

Attributes:
  format: one of FORMATS.
  height, width: the declared size in pixels.
  end: the number of bytes that belong to the image (a JPEG's end-of-image marker included; len(data) otherwise).
  too_short: True for a JPEG whose Huffman-coded data is too short for the size it declares (a big header with
    little data behind it, which libjpeg would decode to a gray image); False otherwise.
"""


class HeaderError(InputError):
  """Data whose header is not one of FORMATS, is malformed, or (JPEG) cannot hold the image it declares; the message
  is a short reason for a warning line."""


# Start-of-frame markers that carry the image size (C4 DHT, C8 JPG and CC DAC are not frames); C9..CF are
# arithmetic-coded.
_SOF_MARKERS = frozenset([0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF])
_ARITHMETIC_SOF = frozenset([0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF])
# Inside entropy-coded data a 0xFF byte is followed by 0x00 (stuffing) or a restart marker D0..D7; anything else
# is the next marker.
_NEXT_MARKER = re.compile(b"\xff[\x01-\xcf\xd8-\xfe]")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _u16be(data, pos):
  return (data[pos] << 8) | data[pos + 1]


def _ceil_div(a, b):
  return -(-a // b)


def sniff(data):
  """The format name of `data` (one of FORMATS) from its first bytes, or None."""
  if len(data) >= 3 and data[0] == 0xFF and data[1] == 0xD8 and data[2] == 0xFF:
    return "jpeg"
  if data[:8] == _PNG_SIGNATURE:
    return "png"
  if data[:2] == b"BM":
    return "bmp"
  if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
    return "webp"
  return None


def describe_unknown(data):
  """A reason for data that is none of FORMATS, naming what it looks like where that helps the user."""
  if data.startswith(b"version https://git-lfs"):
    return "a Git LFS pointer file, not the image itself (run `git lfs pull`)"
  known = [(b"GIF8", "GIF"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"\x00\x00\x00\x0cjP", "JPEG 2000")]
  for magic, name in known:
    if data.startswith(magic):
      return "a %s file: expected JPEG, PNG, BMP or WebP" % name
  return "not a JPEG, PNG, BMP or WebP image (starts with %r)" % bytes(data[:12])


def _png_size(data):
  if len(data) < 24 or data[12:16] != b"IHDR":
    raise HeaderError("malformed PNG header (no IHDR chunk)")
  width, height = struct.unpack(">II", data[16:24])
  return height, width


def _bmp_size(data):
  if len(data) < 26:
    raise HeaderError("malformed BMP header (%d bytes)" % len(data))
  dib_size = struct.unpack("<I", data[14:18])[0]
  if dib_size == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
    width, height = struct.unpack("<HH", data[18:22])
  else:
    width, height = struct.unpack("<ii", data[18:26])
  return abs(height), abs(width)  # a negative height means top-down rows


def _webp_size(data):
  chunk = data[12:16]
  if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
    width, height = struct.unpack("<HH", data[26:30])
    return height & 0x3FFF, width & 0x3FFF
  if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
    bits = struct.unpack("<I", data[21:25])[0]
    return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
  if chunk == b"VP8X" and len(data) >= 30:
    width = data[24] | (data[25] << 8) | (data[26] << 16)
    height = data[27] | (data[28] << 8) | (data[29] << 16)
    return height + 1, width + 1
  raise HeaderError("malformed WebP header (no VP8, VP8L or VP8X chunk)")


def _frame(data, pos, length):
  """(height, width, minimum entropy-coded bits) from a start-of-frame segment at `pos`."""
  if length < 8:
    raise HeaderError("malformed JPEG frame header")
  height, width, count = _u16be(data, pos + 5), _u16be(data, pos + 7), data[pos + 9]
  if length < 8 + 3 * count or count == 0:
    raise HeaderError("malformed JPEG frame header")
  if height == 0 or width == 0:
    # A zero height is legal (defined later by a DNL marker) but libjpeg cannot decode such files either.
    raise HeaderError("JPEG frame header declares a %dx%d image" % (width, height))
  factors = [(data[pos + 11 + 3 * c] >> 4, data[pos + 11 + 3 * c] & 15) for c in range(count)]
  h_max, v_max = max(max(h for h, _ in factors), 1), max(max(v for _, v in factors), 1)
  # Every 8x8 block of every component costs at least one bit of Huffman-coded data (its DC code), whatever the
  # quality, progressive or not: less data than that cannot be the image the header declares.
  blocks = sum(
      _ceil_div(_ceil_div(width * h, h_max), 8) * _ceil_div(_ceil_div(height * v, v_max), 8) for h, v in factors)
  return height, width, blocks


def jpeg_header(data):
  """Header of a JPEG, found by walking its segments to the end-of-image marker.

  Raises HeaderError for a malformed JPEG and one that ends before its end-of-image marker (truncated).
  """
  pos, end = 2, len(data)
  size, min_bits, huffman, coded = None, 0, True, 0
  while True:
    marker_at = data.find(b"\xff", pos)  # libjpeg skips stray bytes before a marker, and so do we
    while 0 <= marker_at < end - 1 and data[marker_at + 1] == 0xFF:  # fill bytes
      marker_at += 1
    if marker_at < 0 or marker_at + 2 > end:
      raise HeaderError("truncated JPEG (the data ends before its end-of-image marker)")
    marker = data[marker_at + 1]
    pos = marker_at + 2
    if marker == 0xD9:  # end of image
      break
    if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length field
      continue
    if pos + 2 > end:
      raise HeaderError("truncated JPEG (the data ends inside a header)")
    length = _u16be(data, pos)
    if length < 2 or pos + length > end:
      raise HeaderError("truncated JPEG (the data ends inside a header)" if length >= 2 else "malformed JPEG")
    if marker in _SOF_MARKERS and size is None:
      height, width, min_bits = _frame(data, marker_at, length)
      size, huffman = (height, width), marker not in _ARITHMETIC_SOF
    pos += length
    if marker == 0xDA:  # start of scan: entropy-coded data up to the next marker
      if size is None:
        raise HeaderError("malformed JPEG (image data before the frame header)")
      found = _NEXT_MARKER.search(data, pos)
      if found is None:
        raise HeaderError("truncated JPEG (the data ends before its end-of-image marker)")
      coded += found.start() - pos
      pos = found.start()
  if size is None:
    raise HeaderError("malformed JPEG (no frame header)")
  return Header("jpeg", size[0], size[1], pos, huffman and 8 * coded < min_bits)


def read_header(data):
  """Header of `data`; raises HeaderError (with a reason) for anything that is not a well-formed JPEG, PNG, BMP or
  WebP, before a single pixel is decoded."""
  kind = sniff(data)
  if kind == "jpeg":
    return jpeg_header(data)
  if kind is None:
    raise HeaderError(describe_unknown(data))
  height, width = {"png": _png_size, "bmp": _bmp_size, "webp": _webp_size}[kind](data)
  if height <= 0 or width <= 0:
    raise HeaderError("%s header declares a %dx%d image" % (kind.upper(), width, height))
  return Header(kind, height, width, len(data), False)


def jpeg_size(data):
  """(height, width) of a well-formed JPEG, or None (not a JPEG, or one jpeg_header refuses)."""
  try:
    header = jpeg_header(data) if sniff(data) == "jpeg" else None
  except HeaderError:
    return None
  return (header.height, header.width) if header else None
