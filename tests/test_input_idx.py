"""IDX files (the MNIST family): pixels and labels round-trip from .gz and plain files, gray becomes 3 channels
without an RGB copy, detection, class names, each malformed file refused with one line naming it, and the worker
pipeline's batches on an IDX dataset."""
import gzip
import struct

import numpy as np
import pytest

from input import idx
from input.datasets import detect, open_dataset
from input.pipeline import InputPipeline


def idx_bytes(array, type_code=0x08):
  array = np.asarray(array)
  return struct.pack(">BBBB", 0, 0, type_code, array.ndim) + struct.pack(">%dI" % array.ndim, *array.shape) + \
      array.tobytes()


def write_bytes(path, data, gz):
  path = str(path) + (".gz" if gz else "")
  with (gzip.open if gz else open)(path, "wb") as f:
    f.write(data)
  return path


def write_split(folder, stem, images, labels, gz=True):
  """<stem>-images-idx3-ubyte[.gz] and <stem>-labels-idx1-ubyte[.gz]; returns their paths."""
  folder.mkdir(parents=True, exist_ok=True)
  return (write_bytes(folder / (stem + "-images-idx3-ubyte"), idx_bytes(np.asarray(images, np.uint8)), gz),
          write_bytes(folder / (stem + "-labels-idx1-ubyte"), idx_bytes(np.asarray(labels, np.uint8)), gz))


def gray_images(count, rows=5, cols=7, seed=0):
  return np.random.RandomState(seed).randint(0, 256, size=(count, rows, cols)).astype(np.uint8)


def one_line_naming(excinfo, path):
  message = str(excinfo.value)
  assert "\n" not in message and str(path) in message, message
  return message


@pytest.mark.parametrize("gz", [True, False])
def test_pixels_and_labels_round_trip_in_three_channels(tmp_path, gz):
  train, test = gray_images(6), gray_images(3, seed=1)
  write_split(tmp_path, "train", train, [0, 9, 3, 3, 7, 1], gz)
  write_split(tmp_path, "t10k", test, [5, 6, 2], gz)
  assert detect(str(tmp_path)) == "idx"
  ds = open_dataset("auto", str(tmp_path), "train")
  assert (ds.name, len(ds), ds.num_classes, list(ds.labels)) == ("idx", 6, 10, [0, 9, 3, 3, 7, 1])
  assert ds.class_names == [str(i) for i in range(10)]
  for i in range(6):
    image = ds.read(i)
    assert image.shape == (5, 7, 3) and image.dtype == np.uint8 and image.flags.c_contiguous
    assert all(np.array_equal(image[..., c], train[i]) for c in range(3))  # rows x columns as stored, gray in R, G, B
  assert ds.images.shape == (6, 5, 7, 3) and np.array_equal(ds.images[4], ds.read(4))
  assert ds.gray.nbytes == 6 * 5 * 7 and np.shares_memory(ds.images, ds.gray)  # no RGB copy is kept
  evaluation = open_dataset("idx", str(tmp_path), "test")
  assert (len(evaluation), list(evaluation.labels)) == (3, [5, 6, 2])
  assert np.array_equal(evaluation.read(2)[..., 1], test[2])


def test_plain_file_is_read_before_gz_and_content_decides_compression(tmp_path):
  write_split(tmp_path, "train", gray_images(2), [1, 2], gz=True)
  write_bytes(tmp_path / "train-labels-idx1-ubyte", idx_bytes(np.array([4, 5], np.uint8)), gz=False)
  assert list(open_dataset("idx", str(tmp_path), "train").labels) == [4, 5]
  # A gzip file without the .gz name (as some downloaders leave it) is still decompressed.
  (tmp_path / "train-labels-idx1-ubyte").write_bytes(gzip.compress(idx_bytes(np.array([6, 7], np.uint8))))
  assert list(open_dataset("idx", str(tmp_path), "train").labels) == [6, 7]


def test_a_folder_recognised_as_fmnist_gets_its_names(tmp_path):
  root = tmp_path / "Fashion-MNIST" / "raw"
  write_split(root, "train", gray_images(3), [0, 8, 9])
  ds = open_dataset("auto", str(root), "train")
  assert ds.num_classes == 10 and ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
  assert [ds.class_names[ds.label(i)] for i in range(3)] == ["T-shirt/top", "Bag", "Ankle boot"]
  plain = tmp_path / "kmnist"
  write_split(plain, "train", gray_images(3), [0, 8, 9])
  assert open_dataset("auto", str(plain), "train").class_names == [str(i) for i in range(10)]


def test_class_names_file_sets_names_and_count(tmp_path):
  names = ["digit %d" % i for i in range(10)] + ["letter a", "letter b"]
  write_split(tmp_path, "train", gray_images(3), [0, 10, 11])
  (tmp_path / "class_names.txt").write_text(u"\ufeff" + "\n".join(names) + "\n\n")
  ds = open_dataset("idx", str(tmp_path), "train")
  assert (ds.num_classes, ds.class_names, ds.label(2)) == (12, names, 11)
  (tmp_path / "class_names.txt").write_text(u"a\n\nb\n")
  with pytest.raises(ValueError) as excinfo:
    open_dataset("idx", str(tmp_path), "train")
  assert "line 2 is blank" in one_line_naming(excinfo, tmp_path / "class_names.txt")


def test_bad_magic_and_unsupported_types_are_refused(tmp_path):
  images, labels = write_split(tmp_path, "train", gray_images(2), [0, 1])
  write_bytes(images[:-3], idx_bytes(np.array([0, 1], np.uint8)), gz=True)  # a labels file under the images name
  with pytest.raises(ValueError) as excinfo:
    open_dataset("idx", str(tmp_path), "train")
  message = one_line_naming(excinfo, images)
  assert "1 dimension (a labels file?)" in message and "0x00000803" in message
  write_bytes(images[:-3], b"\x89PNG\r\n\x1a\n" + b"\0" * 40, gz=True)
  with pytest.raises(ValueError) as excinfo:
    open_dataset("idx", str(tmp_path), "train")
  assert "not an IDX file" in one_line_naming(excinfo, images)
  write_bytes(images[:-3], idx_bytes(gray_images(2).astype(">f4"), type_code=0x0D), gz=True)
  with pytest.raises(ValueError) as excinfo:
    open_dataset("idx", str(tmp_path), "train")
  assert "data type 0x0d (float32) is not supported" in one_line_naming(excinfo, images)


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_and_overlong_images_files_say_both_byte_counts(tmp_path, gz):
  images, _ = write_split(tmp_path, "train", gray_images(4), [0, 1, 2, 3], gz)
  whole = idx_bytes(gray_images(4))
  write_bytes(images[:-3] if gz else images, whole[:-30], gz)
  with pytest.raises(ValueError) as excinfo:
    open_dataset("idx", str(tmp_path), "train")
  message = one_line_naming(excinfo, images)
  assert "expected 140 bytes of images after its 16-byte header (4 x 5 x 7), found 110" in message
  assert "truncated" in message
  write_bytes(images[:-3] if gz else images, whole + b"\0" * 9, gz)
  with pytest.raises(ValueError) as excinfo:
    open_dataset("idx", str(tmp_path), "train")
  assert "found 149: data beyond what the header announces" in one_line_naming(excinfo, images)


def test_a_cut_or_damaged_gzip_file_is_refused(tmp_path):
  images, _ = write_split(tmp_path, "train", gray_images(400, 28, 28), np.zeros(400))
  with open(images, "rb") as f:
    data = f.read()
  with open(images, "wb") as f:
    f.write(data[:len(data) // 2])
  with pytest.raises(ValueError) as excinfo:
    open_dataset("idx", str(tmp_path), "train")
  message = one_line_naming(excinfo, images)
  assert "expected 313600 bytes of images" in message and "before the gzip data ends" in message
  damaged = bytearray(data)
  damaged[-8] ^= 1  # the CRC-32 in the gzip trailer
  with open(images, "wb") as f:
    f.write(damaged)
  with pytest.raises(ValueError) as excinfo:
    open_dataset("idx", str(tmp_path), "train")
  assert "cannot be decompressed (CRC check failed" in one_line_naming(excinfo, images)


def test_label_count_must_match_image_count(tmp_path):
  images, labels = write_split(tmp_path, "train", gray_images(5), [0, 1, 2])
  with pytest.raises(ValueError) as excinfo:
    open_dataset("idx", str(tmp_path), "train")
  message = one_line_naming(excinfo, labels)
  assert "3 labels for the 5 images of %s" % images in message


def test_label_outside_the_classes_is_refused(tmp_path):
  _, labels = write_split(tmp_path, "train", gray_images(4), [0, 10, 3, 12])
  with pytest.raises(ValueError) as excinfo:
    open_dataset("auto", str(tmp_path), "train")
  message = one_line_naming(excinfo, labels)
  assert "label 10 of example 1 is outside 0..9 (10 classes" in message and "1 more labels are" in message
  assert "class_names.txt" in message
  (tmp_path / "class_names.txt").write_text(u"\n".join("c%d" % i for i in range(11)))
  with pytest.raises(ValueError) as excinfo:
    open_dataset("auto", str(tmp_path), "train")
  assert "label 12 of example 3 is outside 0..10 (11 classes, named in" in one_line_naming(excinfo, labels)


def test_only_train_files_asked_for_the_test_split(tmp_path):
  write_split(tmp_path, "train", gray_images(2), [0, 1])
  assert len(open_dataset("auto", str(tmp_path), "train")) == 2
  with pytest.raises(ValueError) as excinfo:
    open_dataset("auto", str(tmp_path), "test")
  message = one_line_naming(excinfo, tmp_path)
  assert "t10k-images-idx3-ubyte[.gz] or t10k-labels-idx1-ubyte[.gz] for split 'test'" in message
  assert "the folder holds only train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz" in message


def test_pipeline_batches_do_not_depend_on_workers(tmp_path):
  write_split(tmp_path, "train", gray_images(40, 28, 28), np.arange(40) % 10)
  ds = open_dataset("idx", str(tmp_path), "train")
  runs = []
  for workers in (0, 2):
    with InputPipeline(ds, 28, 8, True, workers=workers, seed=3) as pipe:
      gen = pipe.batches()
      runs.append([next(gen) for _ in range(7)])  # crosses into epoch 1
  for (a_img, a_lab, _), (b_img, b_lab, b_mask) in zip(*runs):
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab) and np.all(b_mask == 1)
  images = runs[0][0][0]
  assert images.shape == (8, 28, 28, 3) and images.dtype == np.uint8
  assert np.array_equal(images[..., 0], images[..., 1]) and np.array_equal(images[..., 1], images[..., 2])
