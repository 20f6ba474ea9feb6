"""MNIST-family IDX files: pixels and labels, gzip or plain, 3 channels, class names, detection, and each bad file as
one line naming it."""
import gzip
import os
import struct

import numpy as np
import pytest

from input import idx
from input.datasets import detect, open_dataset
from input.pipeline import InputPipeline


def _write(path, magic, array, gz):
  data = struct.pack(">I", magic) + struct.pack(">%dI" % array.ndim, *array.shape) + array.astype(np.uint8).tobytes()
  opener = gzip.open if gz else open
  with opener(path + (".gz" if gz else ""), "wb") as f:
    f.write(data)


def write_idx(folder, n_train=12, n_test=5, gz=True, seed=0, classes=10):
  os.makedirs(folder, exist_ok=True)
  rs = np.random.RandomState(seed)
  out = {}
  for split, n in (("train", n_train), ("t10k", n_test)):
    images = rs.randint(0, 256, (n, 28, 28)).astype(np.uint8)
    labels = rs.randint(0, classes, n).astype(np.uint8)
    if split and n:
      _write(os.path.join(folder, "%s-images-idx3-ubyte" % split), idx.IMAGES_MAGIC, images, gz)
      _write(os.path.join(folder, "%s-labels-idx1-ubyte" % split), idx.LABELS_MAGIC, labels, gz)
    out[split] = (images, labels)
  return out


@pytest.mark.parametrize("gz", [True, False])
def test_pixels_labels_and_three_channels_round_trip(tmp_path, gz):
  folder = str(tmp_path / "mnist")
  written = write_idx(folder, gz=gz)
  assert detect(folder) == "idx"
  train, test = open_dataset("auto", folder, "train"), open_dataset("idx", folder, "test")
  assert (train.name, len(train), len(test), train.num_classes) == ("idx", 12, 5, 10)
  assert train.class_names == [str(c) for c in range(10)]
  for i in (0, 11):
    image = train.read(i)
    assert image.shape == (28, 28, 3) and image.dtype == np.uint8
    for c in range(3):
      assert np.array_equal(image[:, :, c], written["train"][0][i])
    assert train.label(i) == written["train"][1][i]
  assert [test.label(i) for i in range(5)] == list(written["t10k"][1])


def test_fashion_names_and_class_names_file(tmp_path):
  fashion = str(tmp_path / "fashion-mnist")
  write_idx(fashion)
  assert open_dataset("auto", fashion).class_names[0] == "T-shirt/top"
  assert open_dataset("auto", fashion).class_names[9] == "Ankle boot"
  other = str(tmp_path / "kmnist")
  write_idx(other, classes=3)
  with open(os.path.join(other, "class_names.txt"), "w") as f:
    f.write("o\nki\nsu\n")
  assert open_dataset("auto", other).class_names == ["o", "ki", "su"]


def _expect(tmp_path, message_parts, split="train"):
  with pytest.raises(ValueError) as e:
    open_dataset("idx", str(tmp_path / "d"), split)
  text = str(e.value)
  assert "\n" not in text
  for part in message_parts:
    assert part in text, text


def test_bad_magic_truncation_count_mismatch_label_range_and_missing_test_files(tmp_path):
  folder = str(tmp_path / "d")
  write_idx(folder, gz=False)
  images = os.path.join(folder, "train-images-idx3-ubyte")
  with open(images, "rb") as f:
    good = f.read()
  with open(images, "wb") as f:
    f.write(struct.pack(">I", 0x00000D03) + good[4:])
  _expect(tmp_path, ["train-images-idx3-ubyte", "magic number 0x00000d03", "float32", "expected 0x00000803"])
  with open(images, "wb") as f:
    f.write(good[:-100])
  _expect(tmp_path, ["train-images-idx3-ubyte", "truncated", "12 x 28 x 28"])
  with open(images, "wb") as f:
    f.write(good)
  _write(os.path.join(folder, "train-labels-idx1-ubyte"), idx.LABELS_MAGIC, np.zeros(11), False)
  _expect(tmp_path, ["12 images", "11 labels"])
  _write(os.path.join(folder, "train-labels-idx1-ubyte"), idx.LABELS_MAGIC, np.full(12, 10), False)
  _expect(tmp_path, ["train-labels-idx1-ubyte", "label 10", "10 classes"])
  for name in os.listdir(folder):
    if name.startswith("t10k"):
      os.remove(os.path.join(folder, name))
  _expect(tmp_path, ["t10k-images-idx3-ubyte", "split 'test'"], split="test")


def test_workers_slice_the_arrays_into_the_same_batches(tmp_path):
  folder = str(tmp_path / "d")
  write_idx(folder, n_train=40)
  ds = open_dataset("auto", folder)
  batches = {}
  for workers in (0, 2):
    with InputPipeline(ds, 28, 8, True, workers=workers, seed=1, augment="crop", padding=2, erase_prob=0.5) as pipe:
      it = pipe.batches()
      batches[workers] = [next(it) for _ in range(6)]
  for a, b in zip(batches[0], batches[2]):
    for x, y in zip(a, b):
      assert np.array_equal(x, y)
