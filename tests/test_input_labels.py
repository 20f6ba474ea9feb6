"""Labels are checked when a dataset opens: CIFAR label ranges and counts, CIFAR files re-pickled by Python 3, list
files (byte-order mark, odd labels, Latin-1, which lists set the class count)."""
import logging
import os
import pickle

import numpy as np
import pytest

from input.datasets import open_dataset
from tests.input_helpers import noisy, write_cifar10, write_cifar_batch, write_image


def _cifar100(root, labels, images=None, protocol=2):
  root.mkdir(exist_ok=True)
  images = noisy(1, (32, 32))[None].repeat(20, 0) if images is None else images
  write_cifar_batch(str(root / "train"), images, labels, label_key=b"fine_labels", protocol=protocol)
  with open(str(root / "meta"), "wb") as f:
    pickle.dump({b"fine_label_names": [b"c%d" % i for i in range(100)]}, f, protocol=2)


def _one_line_error(*args):
  with pytest.raises(ValueError) as info:
    open_dataset(*args)
  assert "\n" not in str(info.value)
  return str(info.value)


@pytest.mark.parametrize("bad, expected", [
    (100, "label 100 of image 7 is outside 0..99 (100 classes)"),
    (-1, "label -1 of image 7 is outside 0..99 (100 classes)"),
])
def test_cifar_labels_outside_the_classes_are_refused(tmp_path, bad, expected):
  labels = list(range(20))
  labels[7] = bad
  _cifar100(tmp_path / "c100", labels)
  message = _one_line_error("cifar100", str(tmp_path / "c100"), "train")
  assert message == "%s: %s" % (tmp_path / "c100" / "train", expected)


@pytest.mark.parametrize("count", [12, 30])
def test_cifar_label_count_must_match_the_images(tmp_path, count):
  _cifar100(tmp_path / "c100", [1] * count)
  assert _one_line_error("auto", str(tmp_path / "c100"),
                         "train") == ("%s: %d labels for 20 images: expected one label per image" %
                                      (tmp_path / "c100" / "train", count))


def test_cifar_float_labels_and_out_of_range_pixels_are_refused(tmp_path):
  root = tmp_path / "c10"
  write_cifar10(str(root))
  with open(str(root / "test_batch"), "wb") as f:
    pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1.5, 2.0]}, f, protocol=2)
  assert "expected 'labels' to be a list of integer labels, got float64" in _one_line_error(
      "cifar10", str(root), "test")
  with open(str(root / "test_batch"), "wb") as f:
    pickle.dump({b"data": np.full((2, 3072), 300, np.int64), b"labels": [1, 2]}, f, protocol=2)
  assert "expected CIFAR pixel values 0..255 (uint8), got int64 data from 300 to 300" in _one_line_error(
      "cifar10", str(root), "test")


def test_cifar_files_repickled_by_python3_with_str_keys_read_the_same(tmp_path):
  images = noisy(5, (32, 32))[None].repeat(20, 0)
  labels = list(range(0, 100, 5))
  _cifar100(tmp_path / "bytes", labels, images)
  root = tmp_path / "str"
  root.mkdir()
  data = images.transpose(0, 3, 1, 2).reshape(20, 3072)
  with open(str(root / "train"), "wb") as f:
    pickle.dump({"data": data, "fine_labels": np.array(labels), "filenames": ["x"] * 20}, f, protocol=4)
  with open(str(root / "meta"), "wb") as f:
    pickle.dump({"fine_label_names": ["n%d" % i for i in range(100)]}, f, protocol=4)
  reference, repickled = open_dataset("auto", str(tmp_path / "bytes")), open_dataset("auto", str(root))
  assert np.array_equal(reference.images, repickled.images) and list(repickled.labels) == labels
  assert repickled.class_names[3] == "n3"


def _list_dir(root, train_text, **others):
  write_image(str(root / "imgs" / "a.png"), noisy(0))
  write_image(str(root / "imgs" / "b.png"), noisy(1))
  (root / "train.txt").write_bytes(train_text if isinstance(train_text, bytes) else train_text.encode("utf-8"))
  for name, text in others.items():
    (root / name.replace("_", ".")).write_text(text)
  return str(root)


def test_list_file_with_a_byte_order_mark_keeps_its_first_entry(tmp_path):
  ds = open_dataset("list", _list_dir(tmp_path, b"\xef\xbb\xbfimgs/a.png 0\r\nimgs/b.png 1\r\n"), "train")
  assert [os.path.relpath(p, str(tmp_path)) for p in ds.paths] == ["imgs/a.png", "imgs/b.png"]
  assert list(ds.labels) == [0, 1] and ds.read(0).shape == (24, 32, 3)


@pytest.mark.parametrize("label", [u"\u00b2", "--3", "-1", "3.0", "0x3", "99999999999"])
def test_list_labels_that_are_not_plain_integers_name_the_file_and_line(tmp_path, label):
  root = _list_dir(tmp_path, u"imgs/a.png 0\nimgs/b.png %s\n" % label)
  message = _one_line_error("list", root, "train")
  assert message.startswith("%s line 2: label " % os.path.join(root, "train.txt"))
  assert "is not an integer in 0..2147483647" in message


def test_latin1_list_names_the_file_line_and_byte(tmp_path):
  root = _list_dir(tmp_path, u"imgs/a.png 0\nimgs/caf\u00e9.png 1\n".encode("latin-1"))
  assert _one_line_error("list", root,
                         "train") == ("%s line 2: not UTF-8 text (byte 0xe9 at column 9): expected a UTF-8 list file" %
                                      os.path.join(root, "train.txt"))


def test_a_stray_text_file_does_not_change_the_class_count_and_the_lists_read_are_said(tmp_path, caplog):
  root = _list_dir(tmp_path, u"imgs/a.png 0\nimgs/b.png 1\n", val_txt=u"imgs/a.png 4\n", notes_txt=u"buy milk 7\n")
  caplog.set_level(logging.INFO, logger="input")
  assert open_dataset("list", root, "train").num_classes == 5  # 1 + largest label of train.txt and val.txt
  said = [r.getMessage() for r in caplog.records if "classes = " in r.getMessage()]
  assert said == ["input: 5 classes = 1 + the largest label in train.txt, val.txt (in %s); not read: notes.txt" % root]
