"""CRC-32C (Castagnoli), the checksum of the TFRecord framing, in numpy: no compiled extension, no TensorFlow.

TFRecord stores every length and every record with `masked_crc32c` (crc32c rotated right by 15 bits plus a
constant, so that a CRC of data holding CRCs stays well distributed). A byte-at-a-time Python loop costs about
0.15 us per byte (15 ms for a 100 KB JPEG, more than decoding it), so long inputs are cut into `CHUNK` byte
chunks whose CRCs advance side by side as numpy vectors, four bytes per step through two 65536-entry tables (each
the effect of 16 bits of the register), then are folded pairwise: crc(a + b) = shift(crc(a), len(b)) ^ crc(b) for
the zero-initialised register, `shift` being the linear map that runs the register over len(b) zero bytes, applied
through two 65536-entry tables per power of two (built on first use, 512 KB each). The standard
initial value 0xFFFFFFFF is the same as XOR-ing the first four data bytes with 0xFF into a zero register.
"""
import numpy as np

POLY = 0x82F63B78  # Castagnoli's polynomial, bit-reflected
CHUNK = 16  # bytes per vector lane (a multiple of 4): 16 measured fastest for 10-500 KB
SHORT = 512  # shorter inputs take the plain table loop
_MASK_DELTA = 0xA282EAD8


def _byte_table():
  table = []
  for b in range(256):
    c = b
    for _ in range(8):
      c = (c >> 1) ^ POLY if c & 1 else c >> 1
    table.append(c)
  return table


_TABLE = _byte_table()
_T0 = np.array(_TABLE, dtype=np.uint32)
# _T[k][b]: the register after byte b followed by k zero bytes; _LOW / _HIGH: the register after four bytes as a
# function of the low / high 16 bits of (register ^ those bytes).
_T1 = (_T0 >> 8) ^ _T0[_T0 & 0xFF]
_T2 = (_T1 >> 8) ^ _T0[_T1 & 0xFF]
_T3 = (_T2 >> 8) ^ _T0[_T2 & 0xFF]
_WORD = np.arange(65536, dtype=np.uint32)
_LOW = _T3[_WORD & 0xFF] ^ _T2[_WORD >> 8]
_HIGH = _T1[_WORD & 0xFF] ^ _T0[_WORD >> 8]
_SHIFT_TABLES = []  # _SHIFT_TABLES[l]: (low, high) tables running a register over CHUNK * 2**l zero bytes


def _zero_byte(c):
  return _TABLE[c & 0xFF] ^ (c >> 8)


def _apply(columns, c):
  out = 0
  bit = 0
  while c:
    if c & 1:
      out ^= columns[bit]
    c >>= 1
    bit += 1
  return out


def _tables(columns):
  """(low, high) 65536-entry tables of the linear map whose images of the 32 unit registers are `columns`."""
  bytes_ = []
  for k in range(4):
    t = [0] * 256
    for b in range(1, 256):
      low = b & -b
      t[b] = t[b ^ low] ^ columns[8 * k + low.bit_length() - 1]
    bytes_.append(np.array(t, dtype=np.uint32))
  return bytes_[0][_WORD & 0xFF] ^ bytes_[1][_WORD >> 8], bytes_[2][_WORD & 0xFF] ^ bytes_[3][_WORD >> 8]


def _shift_tables(level):
  while len(_SHIFT_TABLES) <= level:
    if not _SHIFT_TABLES:
      columns = []
      for bit in range(32):
        c = 1 << bit
        for _ in range(CHUNK):
          c = _zero_byte(c)
        columns.append(c)
    else:  # squaring: twice the zero bytes of the previous level
      prev = _SHIFT_TABLES[-1][1]
      columns = [_apply(prev, col) for col in prev]
    _SHIFT_TABLES.append((_tables(columns), columns))
  return _SHIFT_TABLES[level][0]


def _loop(data, crc):
  table = _TABLE
  for b in data:
    crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
  return crc


def _vector(data):
  """The zero-initialised register after `data` (the standard initial value already folded into its head)."""
  n = len(data)
  lanes = -(-n // CHUNK)
  buf = np.zeros(lanes * CHUNK, dtype=np.uint8)
  buf[lanes * CHUNK - n:] = np.frombuffer(data, dtype=np.uint8)  # leading zeros leave a zero register as it is
  buf[lanes * CHUNK - n:lanes * CHUNK - n + 4] ^= 0xFF
  words = np.ascontiguousarray(buf.view("<u4").reshape(lanes, CHUNK // 4).T)
  crc = np.zeros(lanes, dtype=np.uint32)
  for w in words:
    crc ^= w
    crc = _LOW[crc & 0xFFFF] ^ _HIGH[crc >> 16]
  level = 0
  while len(crc) > 1:
    if len(crc) & 1:  # a leading zero lane: its register is 0 and shifts to 0
      crc = np.concatenate([np.zeros(1, dtype=np.uint32), crc])
    left, right = crc[0::2], crc[1::2]
    low, high = _shift_tables(level)
    crc = low[left & 0xFFFF] ^ high[left >> 16] ^ right
    level += 1
  return int(crc[0])


def crc32c(data):
  """The CRC-32C of `data` (bytes, bytearray or memoryview) as an int, e.g. crc32c(b"123456789") == 0xE3069283."""
  if len(data) < SHORT:
    return _loop(bytes(data), 0xFFFFFFFF) ^ 0xFFFFFFFF
  return _vector(data) ^ 0xFFFFFFFF


def masked_crc32c(data):
  """TFRecord's masked CRC: ((crc >> 15) | (crc << 17)) + 0xa282ead8, modulo 2**32."""
  crc = crc32c(data)
  return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF
