"""Datasets on other file systems (input/filesystem.py): file:// URLs on both stacks, TF 2.x's in-memory ram://
file system for every reader (listing, reads, forked workers), one-line errors for a scheme this TensorFlow lacks;
the ImageFolder listing cache (input/listing_cache.py): used while the tree is unchanged, redone after a change;
and the compact path table that forked workers share instead of copying."""
import gzip
import io
import json
import logging
import os
import pickle
import time

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from input import dataset_base, datasets, filesystem, image_folder, listing_cache, tfrecord_index
from input.errors import DataError
from input.pipeline import InputPipeline
from tests import input_helpers
from tools import make_tfrecords

HAS_RAM = "ram" in getattr(tf.io.gfile, "get_registered_schemes", lambda: [])()
needs_ram = pytest.mark.skipif(
    not HAS_RAM, reason="TensorFlow %s has no ram:// file system (TF 2.x only); file:// "
    "is tested on this stack instead" % tf.__version__)


def _image_folder(root, classes=3, per_class=5, val_per_class=2):
  for split, count in (("train", per_class), ("val", val_per_class)):
    for c in range(classes):
      for i in range(count):
        input_helpers.write_image(str(root / split / ("c%d" % c) / ("%d.png" % i)), input_helpers.noisy(c * 100 + i))
  # A nested folder and a hidden file: the remote walk must list them as the local one does.
  input_helpers.write_image(str(root / "train" / "c1" / "deeper" / "x.jpg"), input_helpers.noisy(7))
  input_helpers.write_bytes(str(root / "train" / "c2" / ".DS_Store"), b"junk")
  return str(root)


def _ram(tmp_path, name):
  return "ram://%s/%s" % (str(tmp_path).strip("/"), name)


def _batches(dataset, count=2, workers=1):
  with InputPipeline(dataset, 8, 4, True, workers=workers, seed=1) as pipe:
    it = pipe.batches()
    return [next(it) for _ in range(count)]


def _same_batches(a, b):
  for x, y in zip(_batches(a), _batches(b)):
    for u, v in zip(x, y):
      np.testing.assert_array_equal(u, v)


def test_paths_and_urls_are_told_apart():
  assert not filesystem.is_url("/data/x") and not filesystem.is_url("data/x")
  assert not filesystem.is_url("file:///data/x") and filesystem.is_url("gs://b/x") and filesystem.is_url("RAM://x")
  assert filesystem.scheme("S3://b") == "s3" and filesystem.scheme("/a://b") == ""
  assert filesystem.to_local("file:///data/x") == "/data/x" == filesystem.to_local("file://localhost/data/x")
  assert filesystem.to_local("gs://b/x/") == "gs://b/x" and filesystem.to_local("ram://") == "ram://"
  assert filesystem.to_local("data/x") == "data/x" and filesystem.to_local(None) is None
  with pytest.raises(DataError, match="another host"):
    filesystem.to_local("file://server/data/x")


def test_a_file_url_reads_the_same_dataset_as_its_path(tmp_path):
  folder = _image_folder(tmp_path / "images")
  local = datasets.open_dataset("auto", folder, "train")
  url = datasets.open_dataset("auto", "file://" + folder, "train")
  assert url.paths == local.paths and list(url.labels) == list(local.labels) and len(local) == 16
  records = str(tmp_path / "records")
  make_tfrecords.convert(folder, records, "tfds", splits=["train"], num_shards=2, out=io.StringIO())
  shards = datasets.open_dataset("tfrecord", "file://" + records + "/", "train")
  assert shards.shards == datasets.open_dataset("tfrecord", records, "train").shards


@pytest.mark.parametrize("url, words", [
    ("foo://bucket/data", ["'foo' file system", "gs://"]),
    ("s3://bucket/data" if HAS_RAM else "ram://data",
     ["'s3' file system", "tensorflow-io"] if HAS_RAM else ["'ram' file system", "TensorFlow 2"]),
])
def test_a_scheme_this_tensorflow_lacks_is_one_line_naming_it(url, words):
  with pytest.raises(DataError) as e:
    datasets.open_dataset("auto", url, "train")
  message = str(e.value)
  assert "\n" not in message and message.startswith(url + ": TensorFlow %s" % tf.__version__)
  assert all(w in message for w in words), message


@needs_ram
def test_an_image_folder_in_ram_lists_and_trains_as_its_local_copy(tmp_path):
  folder = _image_folder(tmp_path / "images")
  url = input_helpers.copy_to_url(folder, _ram(tmp_path, "images"))
  for split in ("train", "test"):
    local, remote = datasets.open_dataset("auto", folder, split), datasets.open_dataset("auto", url, split)
    assert [p[len(url):] for p in remote.paths] == [p[len(folder):] for p in local.paths]
    assert list(remote.labels) == list(local.labels) and remote.class_names == local.class_names
  train = datasets.open_dataset("auto", url, "train")
  assert any(p.endswith("c1/deeper/x.jpg") for p in train.paths) and not any(".DS_Store" in p for p in train.paths)
  _same_batches(datasets.open_dataset("auto", folder, "train"), train)  # read by a forked worker


@needs_ram
def test_a_missing_remote_file_is_skipped_with_its_reason(tmp_path, caplog):
  folder = _image_folder(tmp_path / "images")
  url = input_helpers.copy_to_url(folder, _ram(tmp_path, "images"))
  dataset = datasets.open_dataset("auto", url, "train")
  tf.io.gfile.remove(dataset.paths[3])
  with caplog.at_level(logging.WARNING, logger="input"):
    with InputPipeline(dataset, 8, len(dataset), False, workers=0) as pipe:
      _, _, mask = next(pipe.batches())
  assert mask[3] == 0 and mask.sum() == len(dataset) - 1
  assert any(dataset.paths[3] in r.getMessage() and "does not exist" in r.getMessage() for r in caplog.records)


@needs_ram
@pytest.mark.parametrize("layout", ["official", "tfds"])
def test_tfrecords_in_ram_are_indexed_into_the_local_cache_and_read_as_local(tmp_path, layout):
  folder = _image_folder(tmp_path / "images")
  records = str(tmp_path / "records")
  make_tfrecords.convert(folder, records, layout, splits=["train", "validation"], num_shards=2, out=io.StringIO())
  url = input_helpers.copy_to_url(records, _ram(tmp_path, "records"), skip_suffix=tfrecord_index.INDEX_SUFFIX)
  cache = str(tmp_path / "cache")
  remote = datasets.open_dataset("auto", url, "train", cache_dir=cache)
  local = datasets.open_dataset("auto", records, "train")
  assert list(remote.labels) == list(local.labels) and remote.class_names == local.class_names
  assert list(remote.offsets) == list(local.offsets)
  built = os.listdir(tfrecord_index.cache_folder(cache))
  assert len(built) == 4 and all(n.endswith(tfrecord_index.INDEX_SUFFIX) for n in built)  # both splits' shards
  assert not [n for n in tf.io.gfile.listdir(url) if n.endswith(tfrecord_index.INDEX_SUFFIX)]  # nothing written there
  _same_batches(local, remote)
  # Reopened: every index comes from the cache, none is built again.
  real_build, tfrecord_index.build = tfrecord_index.build, None
  try:
    again = datasets.open_dataset("auto", url, "train", cache_dir=cache)
  finally:
    tfrecord_index.build = real_build
  assert list(again.offsets) == list(remote.offsets)


@needs_ram
def test_lists_cifar_and_idx_in_ram_read_as_their_local_copies(tmp_path):
  folder = _image_folder(tmp_path / "images")
  lines = ["train/c%d/%d.png %d" % (c, i, c) for c in range(3) for i in range(5)]
  input_helpers.write_bytes(str(tmp_path / "images" / "train.txt"), ("\n".join(lines) + "\n").encode())
  cifar = str(tmp_path / "cifar")
  input_helpers.write_cifar10(cifar)
  mnist = tmp_path / "mnist"
  mnist.mkdir()
  images = np.arange(6 * 5 * 7, dtype=np.uint8).reshape(6, 5, 7)
  header = b"\0\0\x08\x03" + b"".join(int(d).to_bytes(4, "big") for d in images.shape)
  (mnist / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + images.tobytes()))
  (mnist / "train-labels-idx1-ubyte").write_bytes(b"\0\0\x08\x01" + (6).to_bytes(4, "big") + bytes([0, 1, 2, 3, 4, 5]))
  for local, name in ((os.path.join(folder, "train.txt"), "list"), (cifar, "cifar10"), (str(mnist), "idx")):
    url = input_helpers.copy_to_url(os.path.dirname(local) if name == "list" else local, _ram(tmp_path, name))
    remote = datasets.open_dataset("auto", url + "/train.txt" if name == "list" else url, "train")
    mine = datasets.open_dataset("auto", local, "train")
    assert remote.name == mine.name == name and list(remote.labels) == list(mine.labels)
    np.testing.assert_array_equal(remote.read(len(mine) - 1), mine.read(len(mine) - 1))


def _big_tree(root, classes=3, per_class=4):
  for c in range(classes):
    for i in range(per_class):
      input_helpers.write_image(str(root / ("c%d" % c) / ("%d.png" % i)), input_helpers.noisy(c * 10 + i))
  return str(root)


@pytest.fixture
def cached_listings(monkeypatch):
  """Every listing is cached, however small, and a folder written just before is trusted (the tests wait a tick
  before changing the tree instead)."""
  monkeypatch.setattr(image_folder, "MIN_CACHED_FILES", 0)
  monkeypatch.setattr(listing_cache, "SETTLE_SECONDS", 0.0)


def _walks(monkeypatch):
  calls = []
  real = image_folder._list_tree

  def counted(*args):
    calls.append(args[0])
    return real(*args)

  monkeypatch.setattr(image_folder, "_list_tree", counted)
  return calls


def test_a_listing_is_read_from_its_cache_until_a_folder_changes(tmp_path, monkeypatch, cached_listings):
  root = _big_tree(tmp_path / "tree")
  cache = str(tmp_path / "cache")
  walks = _walks(monkeypatch)
  first = image_folder.load_image_folder(root, "train", cache_dir=cache)
  assert os.path.exists(listing_cache.cache_path(root, cache)) and len(walks) == 1
  again = image_folder.load_image_folder(root, "train", cache_dir=cache)
  assert len(walks) == 1 and again.paths == first.paths and list(again.labels) == list(first.labels)
  time.sleep(0.05)  # the next change lands in a later timestamp tick than the cached one
  changes = [
      lambda: input_helpers.write_image(os.path.join(root, "c1", "new.png"), input_helpers.noisy(99)),
      lambda: os.makedirs(os.path.join(root, "c2", "sub", "deeper")),
      lambda: input_helpers.write_image(os.path.join(root, "c2", "sub", "deeper", "y.png"), input_helpers.noisy(98)),
      lambda: os.rename(os.path.join(root, "c0", "0.png"), os.path.join(root, "c0", "9.png")),
      lambda: os.remove(os.path.join(root, "c1", "2.png")),
      lambda: os.chmod(os.path.join(root, "c0"), 0o755),
  ]
  for n, change in enumerate(changes):
    change()
    now = image_folder.load_image_folder(root, "train", cache_dir=cache)
    assert len(walks) == 2 + n, "change %d was not seen" % n
    time.sleep(0.05)
  assert any(p.endswith("deeper/y.png") for p in now.paths) and not any(p.endswith("c1/2.png") for p in now.paths)


def test_a_cached_listing_keeps_its_skips_and_the_eval_label_order(tmp_path, monkeypatch, cached_listings):
  root = _big_tree(tmp_path / "tree")
  os.symlink(os.path.join(root, "c0", "0.png"), os.path.join(root, "c1", "link_to_c0.png"))
  cache = str(tmp_path / "cache")
  first = image_folder.load_image_folder(root, "test", ["c2", "c1", "c0"], cache_dir=cache)
  walks = _walks(monkeypatch)
  again = image_folder.load_image_folder(root, "test", ["c2", "c1", "c0"], cache_dir=cache)
  assert not walks and again.listing_skips == first.listing_skips and len(first.listing_skips) == 1
  assert list(again.labels) == list(first.labels) and first.labels[0] == 2  # c0's files are label 2 here
  assert again.paths == first.paths


def test_a_cache_file_cut_short_or_of_the_old_format_is_walked_again_and_rewritten(tmp_path, monkeypatch,
                                                                                   cached_listings):
  root = _big_tree(tmp_path / "tree")
  cache = str(tmp_path / "cache")
  first = image_folder.load_image_folder(root, "train", cache_dir=cache)
  path = listing_cache.cache_path(root, cache)
  with open(path, "rb") as f:
    whole = f.read()
  old_format = {"version": 1, "root": root, "folders": ["c0", "c1", "c2"], "visited": []}
  walks = _walks(monkeypatch)
  for n, damage in enumerate([
      lambda f: f.write(whole[:len(whole) // 2]),
      lambda f: np.savez(f, meta=np.frombuffer(json.dumps(old_format).encode(), np.uint8), paths=np.zeros(3, np.uint8),
                         counts=np.array([4, 4, 4]))
  ]):
    with open(path, "wb") as f:
      damage(f)
    again = image_folder.load_image_folder(root, "train", cache_dir=cache)
    assert len(walks) == n + 1 and again.paths == first.paths and list(again.labels) == list(first.labels)
  image_folder.load_image_folder(root, "train", cache_dir=cache)
  assert len(walks) == 2  # the last walk rewrote the cache, and it is read again


def test_no_cache_for_a_tree_written_while_it_is_walked_or_a_small_one(tmp_path, monkeypatch):
  root = _big_tree(tmp_path / "tree")
  cache = str(tmp_path / "cache")
  monkeypatch.setattr(image_folder, "MIN_CACHED_FILES", 0)
  image_folder.load_image_folder(root, "train", cache_dir=cache)  # its folders are younger than SETTLE_SECONDS
  assert not os.path.exists(listing_cache.cache_path(root, cache))
  monkeypatch.setattr(image_folder, "MIN_CACHED_FILES", 10000)
  monkeypatch.setattr(listing_cache, "SETTLE_SECONDS", 0.0)
  image_folder.load_image_folder(root, "train", cache_dir=cache)
  assert not os.path.exists(listing_cache.cache_path(root, cache))


def test_a_path_table_reads_back_every_path_and_equals_its_list():
  names = ["/d/a.jpg", "/d/é/b.png", "/d/" + b"\xff".decode("utf-8", "surrogateescape") + ".jpg", "/d/sp ace.jpg"]
  table = dataset_base.PathTable(names)
  assert list(table) == names and len(table) == 4 and table[-1] == names[-1] and table[1:3] == names[1:3]
  assert table[np.int64(2)] == names[2] and table == names and table == dataset_base.PathTable(names)
  assert table != names[:3] and pickle.loads(pickle.dumps(table)) == table
  with pytest.raises(IndexError):
    table[4]  # pylint: disable=pointless-statement
  assert dataset_base.PathTable.of(table) is table and len(dataset_base.PathTable([])) == 0


def _private_dirty_kb():
  with open("/proc/self/smaps_rollup") as f:
    return next(int(line.split()[1]) for line in f if line.startswith("Private_Dirty:"))


def _pages_copied_by_a_child_reading(paths):
  read, write = os.pipe()
  pid = os.fork()
  if pid == 0:
    before = _private_dirty_kb()
    for p in paths:
      len(p)
    os.write(write, str(_private_dirty_kb() - before).encode())
    os._exit(0)
  os.close(write)
  grown = int(os.read(read, 64))
  os.close(read)
  os.waitpid(pid, 0)
  return grown


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup"), reason="needs Linux's /proc/self/smaps_rollup")
def test_a_forked_worker_reading_every_path_shares_the_table_instead_of_copying_it():
  paths = ["/data/imagenet/train/n%08d/n%08d_%d.JPEG" % (i % 1000, i % 1000, i) for i in range(200000)]
  as_list = _pages_copied_by_a_child_reading(paths)
  as_table = _pages_copied_by_a_child_reading(dataset_base.PathTable(paths))
  assert as_list > 10000  # kB: the reference counts of 200,000 str dirty their pages
  assert as_table < as_list / 10, (as_table, as_list)
