"""Small files in the real formats, written by the input tests themselves."""
import os
import pickle
import struct
import zlib

import cv2
import numpy as np


def write_cifar_batch(path, images_hwc, labels, label_key=b"labels", protocol=2):
  """A CIFAR batch exactly as the python release lays it out: rows of 1024 R, 1024 G, 1024 B values."""
  data = np.asarray(images_hwc, np.uint8).transpose(0, 3, 1, 2).reshape(len(images_hwc), 3072)
  batch = {
      b"batch_label": b"test batch",
      label_key: list(int(l) for l in labels),
      b"data": data,
      b"filenames": [b"img_%d.png" % i for i in range(len(labels))]
  }
  if label_key == b"fine_labels":
    batch[b"coarse_labels"] = [0] * len(labels)
  with open(path, "wb") as f:
    pickle.dump(batch, f, protocol=protocol)


def write_cifar10(root, per_batch=3, seed=0):
  """data_batch_1..5 + test_batch + batches.meta; returns (train_images, train_labels)."""
  rng = np.random.RandomState(seed)
  os.makedirs(root)
  images, labels = [], []
  for i in range(1, 6):
    im = rng.randint(0, 256, size=(per_batch, 32, 32, 3)).astype(np.uint8)
    lab = rng.randint(0, 10, size=per_batch)
    write_cifar_batch(os.path.join(root, "data_batch_%d" % i), im, lab)
    images.append(im)
    labels.append(lab)
  write_cifar_batch(os.path.join(root, "test_batch"), rng.randint(0, 256, size=(4, 32, 32, 3)), [1, 2, 3, 4])
  names = [("class%d" % i).encode() for i in range(10)]
  with open(os.path.join(root, "batches.meta"), "wb") as f:
    pickle.dump({b"label_names": names, b"num_cases_per_batch": per_batch}, f, protocol=2)
  return np.concatenate(images), np.concatenate(labels)


def solid(color_rgb, size=(20, 30)):
  image = np.zeros(size + (3,), np.uint8)
  image[:] = color_rgb
  return image


def write_image(path, image_rgb):
  """Writes an RGB array in the format its extension names (cv2 wants BGR)."""
  folder = os.path.dirname(path)
  if not os.path.isdir(folder):
    os.makedirs(folder)
  ext = os.path.splitext(path)[1]
  ok, data = cv2.imencode(ext.lower(), np.ascontiguousarray(image_rgb[..., ::-1]))
  assert ok
  with open(path, "wb") as f:
    f.write(data.tobytes())
  return path


def noisy(seed, size=(24, 32)):
  return np.random.RandomState(seed).randint(0, 256, size=size + (3,)).astype(np.uint8)


def write_bad_files(folder):
  """One file of each bad kind in `folder`; returns their paths."""
  if not os.path.isdir(folder):
    os.makedirs(folder)
  ok, jpeg = cv2.imencode(".jpg", noisy(99, (64, 64)))
  paths = {
      "corrupt": os.path.join(folder, "corrupt.jpg"),
      "truncated": os.path.join(folder, "truncated.jpg"),
      "zero": os.path.join(folder, "zero.png"),
      "text": os.path.join(folder, "notes.png"),
  }
  with open(paths["corrupt"], "wb") as f:
    f.write(b"\xff\xd8\xff\xe0" + os.urandom(300))
  with open(paths["truncated"], "wb") as f:
    f.write(jpeg.tobytes()[:len(jpeg) // 2])
  open(paths["zero"], "wb").close()
  with open(paths["text"], "w") as f:
    f.write("this is not an image\n")
  return paths


def write_bytes(path, data):
  folder = os.path.dirname(path)
  if not os.path.isdir(folder):
    os.makedirs(folder)
  with open(path, "wb") as f:
    f.write(data)
  return path


def encode(ext, image_rgb, params=()):
  """The bytes of `image_rgb` encoded as `ext` by OpenCV."""
  ok, data = cv2.imencode(ext, np.ascontiguousarray(image_rgb[..., ::-1]), list(params))
  assert ok
  return data.tobytes()


def _png_chunk(kind, body):
  return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_bomb(side, with_pixels=True):
  """A 1-bit gray PNG of side x side black pixels: all of its rows (real, highly compressible data; tens of KB for
  side=20000), or only its header when with_pixels is False. Nothing of the decoded size is ever allocated here."""
  header = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
  idat = b""
  if with_pixels:
    rows = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    parts = [packer.compress(rows * min(1024, side - done)) for done in range(0, side, 1024)]
    idat = _png_chunk(b"IDAT", b"".join(parts) + packer.flush())
  return b"\x89PNG\r\n\x1a\n" + header + idat + _png_chunk(b"IEND", b"")


def jpeg_claiming(height, width):
  """A real 8x8 JPEG (about 600 bytes) whose frame header claims height x width: a big header with little data."""
  data = bytearray(encode(".jpg", np.full((8, 8, 3), 128, np.uint8)))
  pos = 2
  while data[pos + 1] not in (0xC0, 0xC2):
    pos += 2 + ((data[pos + 2] << 8) | data[pos + 3])
  data[pos + 5:pos + 9] = struct.pack(">HH", height, width)
  return bytes(data)


def copy_to_url(local_root, url, skip_suffix=None):
  """Copies the tree `local_root` to `url` through tf.io.gfile (file names ending in `skip_suffix` left out);
  returns `url`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for folder, _, files in os.walk(local_root):
    rel = os.path.relpath(folder, local_root)
    target = url if rel == "." else url + "/" + rel.replace(os.sep, "/")
    tf.io.gfile.makedirs(target)
    for name in files:
      if skip_suffix is None or not name.endswith(skip_suffix):
        tf.io.gfile.copy(os.path.join(folder, name), target + "/" + name, overwrite=True)
  return url


class DroppingQueue(object):
  """A stand-in for an input pool's task queue on the parent's side: it loses the `lose`-th task it is given
  (counting from 0) and passes the rest to the real queue. It plays the lost message of a hang seen once in a test
  run (both workers idle, the parent waiting for a result that never came)."""

  def __init__(self, real, lose):
    self._real, self._lose, self._given = real, lose, 0

  def put(self, task):
    self._given += 1
    if self._given - 1 != self._lose:
      self._real.put(task)

  def __getattr__(self, name):
    return getattr(self._real, name)
