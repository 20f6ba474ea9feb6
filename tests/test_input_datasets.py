"""Readers: CIFAR-10/100 pickles, ImageFolder, list files, digits, auto-detection and path errors."""
import os
import pickle

import numpy as np
import pytest

from input.datasets import detect, open_dataset
from tests.input_helpers import noisy, solid, write_cifar10, write_cifar_batch, write_image


def test_cifar10_pixels_labels_names_and_splits(tmp_path):
  root = str(tmp_path / "cifar-10-batches-py")
  images, labels = write_cifar10(root)
  ds = open_dataset("auto", root, "train")
  assert (ds.name, len(ds), ds.num_classes) == ("cifar10", 15, 10)
  assert ds.class_names[3] == "class3"
  for i in (0, 7, 14):
    assert np.array_equal(ds.read(i), images[i])  # planes -> HWC RGB
    assert ds.label(i) == labels[i]
  test = open_dataset("cifar10", root, "test")
  assert len(test) == 4 and [test.label(i) for i in range(4)] == [1, 2, 3, 4]


def test_cifar100_uses_fine_labels_and_meta(tmp_path):
  root = tmp_path / "cifar-100-python"
  root.mkdir()
  images = noisy(1, (32, 32))[None].repeat(5, 0)
  write_cifar_batch(str(root / "train"), images, [0, 99, 5, 5, 42], label_key=b"fine_labels")
  write_cifar_batch(str(root / "test"), images[:2], [7, 8], label_key=b"fine_labels")
  with open(str(root / "meta"), "wb") as f:
    pickle.dump({
        b"fine_label_names": [b"c%d" % i for i in range(100)],
        b"coarse_label_names": [b"x"] * 20
    }, f, protocol=2)
  assert detect(str(root)) == "cifar100"
  ds = open_dataset("auto", str(root), "train")
  assert (ds.num_classes, ds.class_names[99], list(ds.labels)) == (100, "c99", [0, 99, 5, 5, 42])
  assert np.array_equal(ds.read(2), images[2])
  assert list(open_dataset("cifar100", str(root), "val").labels) == [7, 8]


def test_imagefolder_classes_sorted_extensions_and_rgb(tmp_path):
  root = tmp_path / "data"
  write_image(str(root / "train" / "b_red" / "x.PNG"), solid((255, 0, 0)))
  write_image(str(root / "train" / "b_red" / "y.bmp"), solid((250, 0, 0)))
  write_image(str(root / "train" / "a_blue" / "z.jpg"), solid((0, 0, 255)))
  write_image(str(root / "train" / "a_blue" / "deep" / "w.webp"), solid((0, 0, 250)))
  (root / "train" / "a_blue" / "readme.txt").write_text(u"not an image")
  write_image(str(root / "val" / "b_red" / "v.jpeg"), solid((255, 0, 0)))
  ds = open_dataset("auto", str(root), "train")
  assert (ds.name, ds.class_names, len(ds)) == ("imagefolder", ["a_blue", "b_red"], 4)
  by_name = {os.path.basename(p): (ds.read(i), ds.label(i)) for i, p in enumerate(ds.paths)}
  image, label = by_name["x.PNG"]
  assert label == 1 and image.shape == (20, 30, 3) and image.dtype == np.uint8
  assert tuple(image[0, 0]) == (255, 0, 0)  # RGB order, not OpenCV's BGR
  assert by_name["z.jpg"][1] == 0 and by_name["z.jpg"][0][5, 5, 2] > 200
  val = open_dataset("imagefolder", str(root), "val")
  assert (len(val), val.class_names, val.label(0)) == (1, ["a_blue", "b_red"], 1)  # train's label ids
  assert len(open_dataset("imagefolder", str(root), "test")) == 1  # test falls back to val/


def test_imagefolder_without_split_folders_is_used_as_is(tmp_path):
  write_image(str(tmp_path / "cat" / "1.png"), solid((1, 2, 3)))
  write_image(str(tmp_path / "dog" / "2.png"), solid((1, 2, 3)))
  ds = open_dataset("auto", str(tmp_path), "val")
  assert (len(ds), ds.class_names) == (2, ["cat", "dog"])


def test_list_file_paths_relative_to_list_and_num_classes_over_lists(tmp_path):
  write_image(str(tmp_path / "imgs" / "a b.png"), solid((10, 20, 30)))
  write_image(str(tmp_path / "imgs" / "c.jpg"), solid((200, 200, 200)))
  (tmp_path / "train.txt").write_text(u"# comment\nimgs/a b.png 0\n\nimgs/c.jpg 2\n")
  (tmp_path / "val.txt").write_text(u"imgs/c.jpg 4\n")
  ds = open_dataset("auto", str(tmp_path), "train")
  assert (ds.name, len(ds), list(ds.labels), ds.num_classes) == ("list", 2, [0, 2], 5)
  assert tuple(ds.read(0)[0, 0]) == (10, 20, 30)
  assert open_dataset("list", str(tmp_path / "val.txt"), "val").label(0) == 4
  (tmp_path / "classes.txt").write_text(u"zero\none\ntwo\nthree\nfour\nfive\n")
  assert open_dataset("list", str(tmp_path), "train").class_names[5] == "five"


def test_list_file_bad_line_names_file_and_line(tmp_path):
  (tmp_path / "train.txt").write_text(u"imgs/a.png zero\n")
  with pytest.raises(ValueError, match=r"train.txt line 1"):
    open_dataset("list", str(tmp_path), "train")


def test_digits_fixed_stratified_split():
  train, test = open_dataset("digits", split="train"), open_dataset("auto", None, "test")
  assert (len(train), len(test), train.num_classes) == (1438, 359, 10)
  assert set(np.bincount(test.labels)) <= {35, 36, 37}  # ~20 % of every class
  image = train.read(0)
  assert image.shape == (8, 8, 3) and image.dtype == np.uint8
  assert np.array_equal(image[..., 0], image[..., 2])  # gray repeated to RGB
  levels = set(np.round(np.arange(17) * 255.0 / 16).astype(int))
  assert set(np.unique(train.images)) <= levels and train.images.max() == 255  # 0..16 -> 0..255
  assert np.array_equal(open_dataset("digits").read(5), train.read(5))  # the split is fixed


@pytest.mark.parametrize("layout, expected", [
    ("missing", "does not exist"),
    ("empty", "is empty"),
    ("files_only", "neither CIFAR pickles"),
])
def test_bad_paths_give_one_line_value_errors(tmp_path, layout, expected):
  path = tmp_path / "data"
  if layout != "missing":
    path.mkdir()
  if layout == "files_only":
    (path / "notes.md").write_text(u"hello")
  with pytest.raises(ValueError) as info:
    open_dataset("auto", str(path))
  message = str(info.value)
  assert expected in message and str(path) in message and "\n" not in message


def test_imagefolder_without_class_folders_and_unknown_name(tmp_path):
  (tmp_path / "x.png").write_bytes(b"")
  with pytest.raises(ValueError, match="has no class folders"):
    open_dataset("imagefolder", str(tmp_path))
  with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
    open_dataset("mnist")
