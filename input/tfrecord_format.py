"""The TFRecord file format and the tf.train.Example message, read and written in plain Python (no TensorFlow, no
protobuf package), so forked input workers can read shards.

A TFRecord file is a sequence of records, each framed as
  uint64 length (little-endian) | uint32 masked_crc32c(length bytes) | data[length] | uint32 masked_crc32c(data).
A record here holds a serialized tf.train.Example:
  Example  { Features features = 1; }
  Features { map<string, Feature> feature = 1; }      (a map is a repeated {string key = 1; Feature value = 2;})
  Feature  { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
  BytesList { repeated bytes value = 1; }  FloatList { repeated float value = 1 [packed]; }
  Int64List { repeated int64 value = 1 [packed]; }
Readers accept packed and unpacked repeated numbers and skip unknown fields, as protobuf does.
"""
import struct

from input import crc32c
from input.errors import DataError

HEADER_BYTES = 12  # length + its CRC
FOOTER_BYTES = 4  # the data's CRC
_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


class RecordError(DataError):
  """A record that cannot be trusted: a CRC mismatch, a short read, or an Example that does not parse.

  Attributes:
    reason: a short phrase for a warning line ("data CRC mismatch (stored 0x..., computed 0x...)").
  """

  def __init__(self, reason):
    super(RecordError, self).__init__(reason)
    self.reason = reason


def parse_header(header):
  """(data length, error or None) from the 12 header bytes; the error is set when the length's CRC fails."""
  length = _U64.unpack_from(header, 0)[0]
  stored = _U32.unpack_from(header, 8)[0]
  computed = crc32c.masked_crc32c(header[:8])
  if stored != computed:
    return length, "length CRC mismatch (stored 0x%08x, computed 0x%08x)" % (stored, computed)
  return length, None


def check_data(data, footer):
  """None when `footer` (4 bytes) is the masked CRC of `data`, else the reason."""
  stored = _U32.unpack(footer)[0]
  computed = crc32c.masked_crc32c(data)
  if stored != computed:
    return "data CRC mismatch (stored 0x%08x, computed 0x%08x)" % (stored, computed)
  return None


def read_record(f, offset, length, check_crc=True):
  """The data of the record whose header starts at `offset` in the open binary file `f`, `length` bytes long (from
  the index); raises RecordError for a short read, a length other than the index's, or a CRC mismatch."""
  f.seek(offset)
  raw = f.read(HEADER_BYTES + length + FOOTER_BYTES)
  if len(raw) < HEADER_BYTES + length + FOOTER_BYTES:
    raise RecordError("truncated record: %d of its %d bytes are in the file" %
                      (len(raw), HEADER_BYTES + length + FOOTER_BYTES))
  view = memoryview(raw)
  stored_length, error = parse_header(view[:HEADER_BYTES])
  if error is None and stored_length != length:
    error = "the record is %d bytes, the index says %d (the shard changed after it was indexed)" % (stored_length,
                                                                                                    length)
  if error is None and check_crc:
    error = check_data(view[HEADER_BYTES:HEADER_BYTES + length], view[HEADER_BYTES + length:])
  if error:
    raise RecordError(error)
  return view[HEADER_BYTES:HEADER_BYTES + length]


def frame(data):
  """`data` framed as one TFRecord record (bytes)."""
  length = _U64.pack(len(data))
  return b"".join([length, _U32.pack(crc32c.masked_crc32c(length)), data, _U32.pack(crc32c.masked_crc32c(data))])


# ---- protobuf wire format ----


def _varint(buf, pos, end):
  result = shift = 0
  while True:
    if pos >= end or shift > 63:
      raise RecordError("malformed tf.train.Example (a varint runs past its field)")
    b = buf[pos]
    pos += 1
    result |= (b & 0x7F) << shift
    if not b & 0x80:
      return result, pos
    shift += 7


def _fields(buf, pos, end):
  """Yields (field number, wire type, value) of a message in buf[pos:end]; LEN values are (start, stop)."""
  while pos < end:
    key, pos = _varint(buf, pos, end)
    number, wire = key >> 3, key & 7
    if wire == _VARINT:
      value, pos = _varint(buf, pos, end)
    elif wire == _LEN:
      size, pos = _varint(buf, pos, end)
      value = (pos, pos + size)
      pos += size
    elif wire == _FIXED64:
      value = (pos, pos + 8)
      pos += 8
    elif wire == _FIXED32:
      value = (pos, pos + 4)
      pos += 4
    else:
      raise RecordError("malformed tf.train.Example (wire type %d)" % wire)
    if pos > end:
      raise RecordError("malformed tf.train.Example (a field runs past its message)")
    yield number, wire, value


def _signed64(value):
  return value - (1 << 64) if value >= 1 << 63 else value


def _feature(buf, start, stop):
  """A Feature's values: list of bytes, float or int (an empty Feature is [])."""
  values = []
  for number, wire, (s, e) in ((n, w, v) for n, w, v in _fields(buf, start, stop) if w == _LEN and n in (1, 2, 3)):
    for inner, iwire, value in _fields(buf, s, e):
      if inner != 1:
        continue
      if number == 1 and iwire == _LEN:
        values.append(bytes(buf[value[0]:value[1]]))
      elif number == 2 and iwire == _LEN:  # packed floats
        values.extend(struct.unpack("<%df" % ((value[1] - value[0]) // 4), buf[value[0]:value[1]]))
      elif number == 2 and iwire == _FIXED32:
        values.append(struct.unpack("<f", buf[value[0]:value[1]])[0])
      elif number == 3 and iwire == _LEN:  # packed varints
        pos = value[0]
        while pos < value[1]:
          v, pos = _varint(buf, pos, value[1])
          values.append(_signed64(v))
      elif number == 3 and iwire == _VARINT:
        values.append(_signed64(value))
  return values


def parse_example(data, keys=None):
  """{feature name: list of values} of a serialized tf.train.Example (bytes or memoryview).

  keys: only these features are decoded (others are skipped without copying their bytes); None = all. Raises
  RecordError when the bytes are not a well-formed Example.
  """
  buf = memoryview(data)
  features = {}
  for number, wire, (s, e) in _fields(buf, 0, len(buf)):
    if number != 1 or wire != _LEN:
      continue
    for fnumber, fwire, (ms, me) in _fields(buf, s, e):
      if fnumber != 1 or fwire != _LEN:
        continue
      name, value = None, None
      for enumber, ewire, span in _fields(buf, ms, me):
        if enumber == 1 and ewire == _LEN:
          name = bytes(buf[span[0]:span[1]]).decode("utf-8", "replace")
        elif enumber == 2 and ewire == _LEN:
          value = span
      if name is None or (keys is not None and name not in keys):
        continue
      features[name] = _feature(buf, value[0], value[1]) if value else []
  return features


def _encode_varint(value):
  value &= (1 << 64) - 1
  out = bytearray()
  while True:
    b = value & 0x7F
    value >>= 7
    if value:
      out.append(b | 0x80)
    else:
      out.append(b)
      return bytes(out)


def _len_field(number, payload):
  return _encode_varint(number << 3 | _LEN) + _encode_varint(len(payload)) + payload


def encode_example(features):
  """A serialized tf.train.Example of {name: value}: a value is bytes / str / int / float or a list of one kind
  (bytes and str -> bytes_list, int -> int64_list, float -> float_list)."""
  entries = []
  for name in sorted(features):
    values = features[name]
    if not isinstance(values, (list, tuple)):
      values = [values]
    values = [v.encode("utf-8") if isinstance(v, str) else v for v in values]
    if all(isinstance(v, bytes) for v in values):
      kind = _len_field(1, b"".join(_len_field(1, v) for v in values))
    elif all(isinstance(v, int) for v in values):
      kind = _len_field(3, _len_field(1, b"".join(_encode_varint(v) for v in values)))
    elif all(isinstance(v, (int, float)) for v in values):
      kind = _len_field(2, _len_field(1, struct.pack("<%df" % len(values), *values)))
    else:
      raise TypeError("feature %r: expected bytes, str, int or float values" % name)
    entries.append(_len_field(1, _len_field(1, name.encode("utf-8")) + _len_field(2, kind)))
  return _len_field(1, b"".join(entries))
