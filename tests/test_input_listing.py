"""What an ImageFolder listing takes and leaves out: symlink loops, links into other classes, duplicates, hidden
entries, FIFOs, unreadable folders; class-count warnings; unreadable datasets and folders at open time."""
import logging
import os

import pytest

from input import datasets, image_folder
from input.dataset_base import UnreadableDatasetError
from input.datasets import open_dataset
from tests.input_helpers import noisy, write_bytes, write_image


def _two_classes(root, per_class=6):
  for c in ("a", "b"):
    for i in range(per_class):
      write_image(str(root / "train" / c / ("%d.png" % i)), noisy(i))
    write_image(str(root / "train" / c / "deep" / "x.png"), noisy(50))


def _skip_lines(caplog):
  return [r.getMessage() for r in caplog.records if r.getMessage().startswith("input: skipped ")]


def test_symlink_loops_change_neither_the_count_nor_any_label(tmp_path, caplog):
  _two_classes(tmp_path)
  plain = open_dataset("imagefolder", str(tmp_path), "train")
  train = tmp_path / "train"
  os.symlink("..", str(train / "a" / "loop"))  # up to train/: would list class b's images as class a
  os.symlink(".", str(train / "a" / "deep" / "self"))
  os.symlink("../..", str(train / "b" / "deep" / "up"))
  caplog.set_level(logging.INFO, logger="input")
  looped = open_dataset("imagefolder", str(tmp_path), "train")
  assert looped.paths == plain.paths and list(looped.labels) == list(plain.labels) and len(looped) == 14
  lines = _skip_lines(caplog)
  assert any(str(train / "a" / "loop") in l and "outside its class folder" in l for l in lines)
  assert any(str(train / "b" / "deep" / "up") in l and "outside its class folder" in l for l in lines)
  assert any(str(train / "a" / "deep" / "self") in l and "a loop or a second name" in l for l in lines)


def test_links_inside_a_class_are_followed_once_and_links_into_another_class_are_not(tmp_path, caplog):
  _two_classes(tmp_path, per_class=2)
  train = tmp_path / "train"
  os.symlink("deep", str(train / "a" / "alias"))  # the same folder twice
  os.symlink("0.png", str(train / "a" / "same.png"))  # the same file twice
  os.symlink("../b/1.png", str(train / "a" / "stolen.png"))  # class b's file under class a's name
  pool = write_image(str(tmp_path / "pool" / "shared.png"), noisy(7))
  os.symlink(pool, str(train / "b" / "shared.png"))  # a file from outside the dataset: a normal example
  caplog.set_level(logging.WARNING, logger="input")
  ds = open_dataset("imagefolder", str(tmp_path), "train")
  by_label = {
      c: sorted(os.path.relpath(p, str(train)) for p, l in zip(ds.paths, ds.labels) if l == i)
      for i, c in enumerate(ds.class_names)
  }
  assert by_label == {
      "a": ["a/0.png", "a/1.png", "a/deep/x.png"],
      "b": ["b/0.png", "b/1.png", "b/deep/x.png", "b/shared.png"]
  }
  reasons = dict(ds.listing_skips)
  assert "listed already" in reasons[str(train / "a" / "same.png")]
  assert "listed already as" in reasons[str(train / "a" / "alias")]
  assert "folder of class b" in reasons[str(train / "a" / "stolen.png")]
  assert len(_skip_lines(caplog)) == 3


def test_a_class_folder_that_is_another_class_is_an_error(tmp_path):
  _two_classes(tmp_path, per_class=1)
  os.symlink("a", str(tmp_path / "train" / "c"))
  with pytest.raises(ValueError, match=r"class folders a and c are the same folder"):
    open_dataset("imagefolder", str(tmp_path), "train")


def test_hidden_entries_fifos_and_unreadable_folders_are_left_out_and_said(tmp_path, caplog, monkeypatch):
  _two_classes(tmp_path, per_class=2)
  a = tmp_path / "train" / "a"
  write_bytes(str(a / "._0.png"), b"\x00\x05\x16\x07 AppleDouble")
  write_image(str(a / ".hidden" / "h.png"), noisy(1))
  os.mkfifo(str(a / "pipe.jpg"))
  locked = str(tmp_path / "train" / "b" / "deep")
  real_scandir = os.scandir

  def scandir(path="."):
    if os.path.abspath(path) == locked:  # what a folder without read permission does (tests may run as root)
      raise PermissionError(13, "Permission denied", path)
    return real_scandir(path)

  monkeypatch.setattr(image_folder.os, "scandir", scandir)
  caplog.set_level(logging.INFO, logger="input")
  ds = open_dataset("imagefolder", str(tmp_path), "train")
  names = sorted(os.path.relpath(p, str(tmp_path / "train")) for p in ds.paths)
  assert names == ["a/0.png", "a/1.png", "a/deep/x.png", "b/0.png", "b/1.png"]
  reasons = dict(ds.listing_skips)
  assert reasons[str(a / "pipe.jpg")] == "a FIFO, not a regular file"
  assert reasons[locked] == "cannot list this folder (Permission denied)"
  assert any("ignored 2 hidden files and folders" in r.getMessage() for r in caplog.records)


def test_one_class_and_empty_classes_are_warned_about(tmp_path, caplog):
  for i in range(3):
    write_image(str(tmp_path / "only" / "train" / "cat" / ("%d.png" % i)), noisy(i))
  caplog.set_level(logging.WARNING, logger="input")
  assert open_dataset("auto", str(tmp_path / "only"), "train").num_classes == 1
  assert any("has 1 class (cat)" in r.getMessage() and "learns nothing" in r.getMessage() for r in caplog.records)
  caplog.clear()
  write_image(str(tmp_path / "gap" / "train" / "cat" / "0.png"), noisy(0))
  write_bytes(str(tmp_path / "gap" / "train" / "dog" / "readme.txt"), b"no images here")
  write_image(str(tmp_path / "gap" / "train" / "emu" / "0.png"), noisy(1))
  open_dataset("auto", str(tmp_path / "gap"), "train")
  assert any("1 of its 3 classes have no example (dog)" in r.getMessage() for r in caplog.records)


def test_a_dataset_of_git_lfs_pointers_is_refused_at_open_in_one_line(tmp_path):
  for c in ("a", "b"):
    for i in range(12):
      write_bytes(str(tmp_path / c / ("%02d.jpg" % i)), b"version https://git-lfs.github.com/spec/v1\noid x\n")
  with pytest.raises(UnreadableDatasetError) as info:
    open_dataset("imagefolder", str(tmp_path), "train")
  message = str(info.value)
  assert "\n" not in message and str(tmp_path) in message and "none of the 16 files checked" in message
  assert message.count("Git LFS pointer") == 3 and "(and 13 more)" in message
  write_image(str(tmp_path / "b" / "real.png"), noisy(0))  # one real image among the probed files: usable
  assert len(open_dataset("imagefolder", str(tmp_path), "train")) == 25


def test_an_unreadable_data_dir_is_a_one_line_value_error(tmp_path, monkeypatch):
  _two_classes(tmp_path, per_class=1)
  data_dir = str(tmp_path)
  real_listdir = os.listdir

  def listdir(path="."):
    if os.path.abspath(path) == data_dir:
      raise PermissionError(13, "Permission denied", path)
    return real_listdir(path)

  monkeypatch.setattr(datasets.os, "listdir", listdir)
  with pytest.raises(ValueError) as info:
    open_dataset("auto", data_dir, "train")
  assert str(info.value) == ("%s: cannot read it (Permission denied): expected a readable dataset folder or list file" %
                             data_dir)
