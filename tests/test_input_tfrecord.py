"""TFRecord shards (official ImageNet and TFDS layouts) written by TensorFlow here, read without it: labels and the
label offset, class names, the index (reused, rebuilt), bad records skipped and counted, one-line errors, batches
equal to the ImageFolder's, and tools.make_tfrecords."""
import io
import logging
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from input import crc32c, image_codec, tfrecord, tfrecord_format, tfrecord_index
from input.datasets import detect, open_dataset
from input.pipeline import InputPipeline
from tests.input_helpers import encode, noisy, write_image
from tests import tool_helpers
from tools import make_tfrecords


def _feature(value):
  if isinstance(value, bytes):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def _write(path, records):
  """Writes one shard with TensorFlow's writer; records are {feature: bytes or int} dicts."""
  with tf.io.TFRecordWriter(path) as writer:
    for features in records:
      example = tf.train.Example(features=tf.train.Features(feature={k: _feature(v) for k, v in features.items()}))
      writer.write(example.SerializeToString())


def _jpeg(i):
  return encode(".jpg", noisy(i, (40 + i, 48)))


def _official(i, label):
  return {
      "image/encoded": _jpeg(i),
      "image/format": b"JPEG",
      "image/class/label": label,
      "image/class/synset": b"n%08d" % label,
      "image/class/text": b"class number %d" % label,
      "image/height": 40 + i,
      "image/width": 48,
  }


def _official_folder(root, labels_per_shard, split="train"):
  os.makedirs(str(root), exist_ok=True)
  paths, i = [], 0
  for k, labels in enumerate(labels_per_shard):
    path = str(root / ("%s-%05d-of-%05d" % (split, k, len(labels_per_shard))))
    _write(path, [_official(i + n, label) for n, label in enumerate(labels)])
    i += len(labels)
    paths.append(path)
  return paths


def test_crc32c_matches_the_standard_and_tensorflow(tmp_path):
  assert crc32c.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
  rng = np.random.RandomState(0)
  for n in (0, 1, 5, 511, 512, 513, 4096 + 3, 100001):
    data = rng.randint(0, 256, n).astype(np.uint8).tobytes()
    assert crc32c.crc32c(data) == crc32c._loop(data, 0xFFFFFFFF) ^ 0xFFFFFFFF, n  # vector path = byte loop
  path = str(tmp_path / "x.tfrecord")
  with tf.io.TFRecordWriter(path) as writer:
    writer.write(b"a" * 700)
  assert open(path, "rb").read() == tfrecord_format.frame(b"a" * 700)  # TensorFlow's framing, byte for byte


def test_example_parser_reads_what_tensorflow_writes():
  example = tf.train.Example(features=tf.train.Features(
      feature={
          "b": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"x", b""])),
          "i": tf.train.Feature(int64_list=tf.train.Int64List(value=[3, -2, 2**40])),
          "f": tf.train.Feature(float_list=tf.train.FloatList(value=[0.5, -1.25])),
          "e": tf.train.Feature(),
      }))
  parsed = tfrecord_format.parse_example(example.SerializeToString())
  assert parsed == {"b": [b"x", b""], "i": [3, -2, 2**40], "f": [0.5, -1.25], "e": []}
  assert tfrecord_format.parse_example(example.SerializeToString(), ("i",)) == {"i": [3, -2, 2**40]}
  ours = tf.train.Example.FromString(tfrecord_format.encode_example({"i": [7, -1], "s": "t", "f": 0.25}))
  assert ours.features.feature["i"].int64_list.value == [7, -1]
  assert ours.features.feature["s"].bytes_list.value == [b"t"] and ours.features.feature["f"].float_list.value == [0.25]
  with pytest.raises(tfrecord_format.RecordError):
    tfrecord_format.parse_example(b"\x0a\x05ab")


def test_official_layout_labels_names_bytes_and_splits(tmp_path):
  shards = _official_folder(tmp_path, [[1, 2, 3], [3, 1]])
  _official_folder(tmp_path, [[2, 3]], split="validation")
  assert detect(str(tmp_path)) == "tfrecord"
  ds = open_dataset("auto", str(tmp_path), "train")
  assert (ds.name, ds.layout, ds.label_offset, len(ds), ds.num_classes) == ("tfrecord", "official", -1, 5, 3)
  assert list(ds.labels) == [0, 1, 2, 2, 0] and ds.labels.dtype == np.int32
  assert ds.class_names == ["n00000001", "n00000002", "n00000003"] and ds.class_texts[1] == "class number 2"
  assert ds.read_encoded(3) == _jpeg(3)
  second = open(shards[1], "rb").read()
  offset = int(ds.offsets[4])
  assert ds.describe(4) == "%s@%d" % (shards[1], offset) and second[offset + 12:].find(_jpeg(4)) > 0
  assert ds.read(0).shape == (40, 48, 3)
  val = open_dataset("tfrecord", str(tmp_path), "test")  # asked name first, then validation
  assert (len(val), list(val.labels), val.class_names) == (2, [1, 2], ds.class_names)
  # label_offset 0 keeps the background class 0 (the Ascend ResNet-50's 1001 outputs)
  kept = open_dataset("tfrecord", str(tmp_path), "train", label_offset=0)
  assert kept.num_classes == 4 and kept.class_names[0] == "background" and list(kept.labels) == [1, 2, 3, 3, 1]


def _tfds_folder(root, labels, name="mnistish", split="train", names=None, features_json=None, shards=1):
  os.makedirs(str(root), exist_ok=True)
  for k in range(shards):
    part = labels[k::shards]
    _write(str(root / ("%s-%s.tfrecord-%05d-of-%05d" % (name, split, k, shards))), [{
        "image": _jpeg(k * 10 + n),
        "label": label
    } for n, label in enumerate(part)])
  if names is not None:
    (root / "label.labels.txt").write_text(u"".join(n + "\n" for n in names))
  if features_json is not None:
    (root / "features.json").write_text(features_json)


def test_tfds_layout_class_names_from_labels_txt_or_features_json(tmp_path):
  _tfds_folder(tmp_path / "a", [0, 2, 1, 2], names=["cat", "dog", "eel"])
  _tfds_folder(tmp_path / "a", [1], split="test")
  ds = open_dataset("auto", str(tmp_path / "a"), "train")
  assert (ds.layout, ds.label_offset, ds.class_names, list(ds.labels)) == ("tfds", 0, ["cat", "dog",
                                                                                       "eel"], [0, 2, 1, 2])
  assert list(open_dataset("auto", str(tmp_path / "a"), "val").labels) == [1]
  new_style = ('{"featuresDict": {"features": {"image": {}, "label": {"pythonClassName": "x.ClassLabel", '
               '"classLabel": {"numClasses": "5"}}}}}')
  _tfds_folder(tmp_path / "b", [4, 0], features_json=new_style)
  assert open_dataset("tfrecord", str(tmp_path / "b"), "train").class_names == ["0", "1", "2", "3", "4"]
  old_style = '{"type": "FeaturesDict", "content": {"label": {"type": "ClassLabel", "content": {"num_classes": 3}}}}'
  _tfds_folder(tmp_path / "c", [2], features_json=old_style)
  assert open_dataset("tfrecord", str(tmp_path / "c"), "train").num_classes == 3


def test_labels_of_another_offset_are_one_line_never_a_shift(tmp_path):
  shards = _official_folder(tmp_path / "zero_based", [[0, 1, 2]])
  with pytest.raises(ValueError) as e:
    open_dataset("auto", str(tmp_path / "zero_based"), "train")
  line = str(e.value)
  assert "\n" not in line and shards[0] in line and "label 0 + label_offset -1 = -1" in line
  assert "--label_offset 0" in line
  assert list(open_dataset("auto", str(tmp_path / "zero_based"), "train", label_offset=0).labels) == [0, 1, 2]
  _tfds_folder(tmp_path / "tfds", [0, 2], names=["a", "b", "c"])
  with pytest.raises(ValueError, match=r"label 2 \+ label_offset 1 = 3 is outside 0..2 \(3 classes"):
    open_dataset("tfrecord", str(tmp_path / "tfds"), "train", label_offset=1)
  _tfds_folder(tmp_path / "tfds5", [5], names=["a", "b", "c"])
  with pytest.raises(ValueError, match="mnistish-train.tfrecord-00000-of-00001@0: label 5"):
    open_dataset("tfrecord", str(tmp_path / "tfds5"), "train")
  with pytest.raises(ValueError, match="applies to TFRecord shards only"):
    write_image(str(tmp_path / "folder" / "a" / "x.png"), noisy(0))
    open_dataset("auto", str(tmp_path / "folder"), "train", label_offset=-1)
  with pytest.raises(ValueError, match="label_offset must be an integer"):
    open_dataset("tfrecord", str(tmp_path / "tfds"), "train", label_offset="1")


def test_index_is_built_once_reused_and_rebuilt_when_the_shard_changes(tmp_path, monkeypatch, caplog):
  shard = _official_folder(tmp_path, [[1, 2, 1]])[0]
  builds = []
  real_build = tfrecord_index.build
  monkeypatch.setattr(tfrecord_index, "build", lambda *a: builds.append(a[0]) or real_build(*a))
  assert len(open_dataset("tfrecord", str(tmp_path), "train")) == 3
  assert os.path.isfile(shard + ".index.npz") and len(builds) == 1
  assert len(open_dataset("tfrecord", str(tmp_path), "train")) == 3 and len(builds) == 1  # reused
  assert detect(str(tmp_path)) == "tfrecord"  # the index file beside it is not taken for a shard
  caplog.set_level(logging.INFO, logger="input")
  _write(shard, [_official(i, 1 + i % 2) for i in range(4)])  # the shard changes: 4 records now
  ds = open_dataset("tfrecord", str(tmp_path), "train")
  assert len(builds) == 2 and len(ds) == 4 and list(ds.labels) == [0, 1, 0, 1]
  assert any("is older than its shard" in r.getMessage() and "rebuilding" in r.getMessage() for r in caplog.records)
  with open(shard + ".index.npz", "r+b") as f:  # an index cut short (a disk that filled up): rebuilt, not a crash
    f.truncate(40)
  assert len(open_dataset("tfrecord", str(tmp_path), "train")) == 4 and len(builds) == 3


def test_index_goes_to_the_cache_folder_when_the_shard_folder_is_read_only(tmp_path, monkeypatch):
  shard = _official_folder(tmp_path / "data", [[1, 2]])[0]
  real_save = tfrecord_index.save

  def save(index, keys, stat, path):
    if path.startswith(str(tmp_path / "data")):
      raise PermissionError(13, "Read-only file system", path)  # root ignores chmod, so the refusal is simulated
    real_save(index, keys, stat, path)

  monkeypatch.setattr(tfrecord_index, "save", save)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  assert len(open_dataset("tfrecord", str(tmp_path / "data"), "train")) == 2
  cached = tfrecord_index.index_paths(shard)[1]
  assert cached.startswith(str(tmp_path / "cache")) and os.path.isfile(cached)
  assert not os.path.exists(shard + ".index.npz")
  monkeypatch.setattr(tfrecord_index, "build", None)  # a second open must not build
  assert len(open_dataset("tfrecord", str(tmp_path / "data"), "train")) == 2


def _flip_in_image(shard, ds, i):
  data = bytearray(open(shard, "rb").read())
  start = int(ds.offsets[i]) + 12
  at = bytes(data).find(_jpeg(i), start) + 200
  data[at] ^= 0x55
  with open(shard, "wb") as f:
    f.write(bytes(data))


@pytest.mark.parametrize("when", ["before_indexing", "after_indexing"])
def test_a_corrupt_record_is_skipped_counted_and_named(tmp_path, when, caplog):
  shard = _official_folder(tmp_path, [[1, 2] * 5])[0]
  ds = open_dataset("tfrecord", str(tmp_path), "train")
  _flip_in_image(shard, ds, 3)
  if when == "before_indexing":
    ds = open_dataset("tfrecord", str(tmp_path), "train")  # the shard changed: the index is rebuilt
    assert set(ds.bad_records) == {3}
  with pytest.raises(image_codec.DecodeError, match="data CRC mismatch"):
    ds.read_encoded(3)
  caplog.set_level(logging.WARNING, logger="input")
  for workers in (0, 2):
    with InputPipeline(ds, 16, 5, True, workers=workers, seed=0) as pipe:
      batches = [b for _, b in zip(range(2 * pipe.steps_per_epoch), pipe.batches())]  # every record met twice
      assert pipe.skipped == 1 and list(pipe.bad_files) == [ds.describe(3)], workers
      assert "CRC mismatch" in pipe.bad_files[ds.describe(3)]
      assert all(images.shape == (5, 16, 16, 3) for images, _, _ in batches)
  with InputPipeline(ds, 16, 4, False, workers=2) as pipe:
    masks = [m for _, _, m in pipe.batches()]
    assert sum(m.sum() for m in masks) == 9 and pipe.skipped == 1  # eval: the record is masked out
  assert any("%s@%d" % (shard, ds.offsets[3]) in r.getMessage() for r in caplog.records)


def test_a_truncated_last_record_is_one_warning_and_left_out(tmp_path, caplog):
  shard = _official_folder(tmp_path, [[1, 2, 1, 2]])[0]
  size = os.path.getsize(shard)
  with open(shard, "r+b") as f:
    f.truncate(size - 30)
  caplog.set_level(logging.WARNING, logger="input")
  ds = open_dataset("tfrecord", str(tmp_path), "train")
  assert len(ds) == 3 and list(ds.labels) == [0, 1, 0]
  lines = [r.getMessage() for r in caplog.records if "truncated record" in r.getMessage()]
  assert len(lines) == 1 and shard in lines[0] and "bytes are left" in lines[0] and "\n" not in lines[0]


def test_a_record_without_image_encoded_is_skipped_with_its_keys_named(tmp_path):
  records = [_official(i, 1 + i % 2) for i in range(6)]
  del records[2]["image/encoded"]
  os.makedirs(str(tmp_path / "d"))
  _write(str(tmp_path / "d" / "train-00000-of-00001"), records)
  ds = open_dataset("tfrecord", str(tmp_path / "d"), "train")
  with pytest.raises(
      image_codec.DecodeError, match="no 'image/encoded' bytes feature in the record \\(it has: "
      "image/class/label, image/class/synset"):
    ds.read_encoded(2)
  with InputPipeline(ds, 16, 3, True, workers=2, seed=1) as pipe:
    list(zip(range(2 * pipe.steps_per_epoch), pipe.batches()))
    assert pipe.skipped == 1 and ds.describe(2) in pipe.bad_files


def test_mixed_layouts_are_one_line(tmp_path):
  _official_folder(tmp_path / "mixed", [[1]])
  _tfds_folder(tmp_path / "mixed", [0], names=["a"])
  with pytest.raises(
      ValueError, match="mixes TFRecord layouts: official ImageNet shards \\(train-00000-of-00001\\) "
      "and TFDS shards \\(mnistish-train.tfrecord-00000-of-00001\\)"):
    open_dataset("auto", str(tmp_path / "mixed"), "train")
  os.makedirs(str(tmp_path / "renamed"))  # TFDS records under official names
  _write(str(tmp_path / "renamed" / "train-00000-of-00001"), [{"image": _jpeg(0), "label": 0}])
  with pytest.raises(ValueError, match="no record has a 'image/class/label' feature \\(the first has: image, label\\)"):
    open_dataset("auto", str(tmp_path / "renamed"), "train")
  _official_folder(tmp_path / "counts", [[1]])
  _official_folder(tmp_path / "counts", [[1], [2]])  # a second conversion into the same folder
  with pytest.raises(ValueError, match="the train shards come in 2 counts \\(-of-00001, -of-00002\\)"):
    open_dataset("auto", str(tmp_path / "counts"), "train")
  _official_folder(tmp_path / "two", [[1, 2]])
  _write(str(tmp_path / "two" / "validation-00000-of-00001"), [dict(_official(5, 1), **{"image/class/synset": b"x"})])
  with pytest.raises(ValueError, match="label 1 is .* one label, one class expected"):
    open_dataset("auto", str(tmp_path / "two"), "train")


def _jpeg_folder(root, count=24, classes=3):
  for i in range(count):
    write_image(str(root / ("c%d" % (i % classes)) / ("%02d.jpg" % i)), noisy(i, (60 + 3 * i, 80)))


@pytest.mark.parametrize("layout", ["official", "tfds"])
def test_pipeline_batches_from_tfrecords_equal_the_image_folders(tmp_path, layout):
  _jpeg_folder(tmp_path / "images")
  out = io.StringIO()
  make_tfrecords.convert(str(tmp_path / "images"), str(tmp_path / "records"), layout, splits=["train"], num_shards=3,
                         out=out)
  folder = open_dataset("imagefolder", str(tmp_path / "images"), "train")
  records = open_dataset("auto", str(tmp_path / "records"), "train")
  assert records.class_names == folder.class_names and np.array_equal(records.labels, folder.labels)
  assert len(records.shards) == 3 and "24/24 examples" in out.getvalue()
  for workers in (0, 2):
    with InputPipeline(folder, 24, 6, True, workers=workers, seed=5) as a, \
        InputPipeline(records, 24, 6, True, workers=workers, seed=5) as b:
      first = [batch for _, batch in zip(range(6), a.batches())]  # two epochs
      second = [batch for _, batch in zip(range(6), b.batches())]
      for (ai, al, _), (bi, bl, _) in zip(first, second):
        assert np.array_equal(ai, bi) and np.array_equal(al, bl)
    with InputPipeline(folder, 24, 7, False, workers=workers) as a, InputPipeline(records, 24, 7, False,
                                                                                  workers=workers) as b:
      for (ai, al, am), (bi, bl, bm) in zip(a.batches(), b.batches()):
        assert np.array_equal(ai, bi) and np.array_equal(al, bl) and np.array_equal(am, bm)


def test_make_tfrecords_round_trip_of_cifar_arrays_and_rerun_skips_finished_shards(tmp_path, monkeypatch):
  from tests.input_helpers import write_cifar10
  images, labels = write_cifar10(str(tmp_path / "cifar"))
  out = io.StringIO()
  written = make_tfrecords.convert(str(tmp_path / "cifar"), str(tmp_path / "tfds"), "tfds", num_shards=2, out=out)
  assert [os.path.basename(p) for p in written["train"]
         ] == ["cifar-train.tfrecord-00000-of-00002", "cifar-train.tfrecord-00001-of-00002"]
  assert all(os.path.isfile(p + ".index.npz") for p in written["train"] + written["validation"])
  ds = open_dataset("auto", str(tmp_path / "tfds"), "train")
  assert ds.class_names == ["class%d" % i for i in range(10)] and np.array_equal(ds.labels, labels)
  for i in range(len(ds)):
    assert np.array_equal(ds.read(i), images[i])  # PNG: lossless
  assert len(open_dataset("auto", str(tmp_path / "tfds"), "validation")) == 4
  os.remove(written["train"][1])  # as if the first run had been stopped while writing it
  calls = []
  original = make_tfrecords._example
  monkeypatch.setattr(make_tfrecords, "_example", lambda d, i, l: calls.append((d.split, i)) or original(d, i, l))
  make_tfrecords.convert(str(tmp_path / "cifar"), str(tmp_path / "tfds"), "tfds", num_shards=2, out=io.StringIO())
  assert calls == [("train", i) for i in range(7, 15)]  # only the missing shard is written again
  assert np.array_equal(open_dataset("auto", str(tmp_path / "tfds"), "train").labels, labels)
  with pytest.raises(make_tfrecords.UsageError, match="already holds train shards of another count"):
    make_tfrecords.convert(str(tmp_path / "cifar"), str(tmp_path / "tfds"), "tfds", num_shards=3, out=io.StringIO())


def test_make_tfrecords_command_converts_and_refuses_bad_input_in_one_line(tmp_path):
  _jpeg_folder(tmp_path / "images", count=6)
  done = tool_helpers.run_tool("tools.make_tfrecords", "--data_dir=%s" % (tmp_path / "images"),
                               "--output_dir=%s" % (tmp_path / "out"), "--splits=train", "--num_shards=2")
  assert done.returncode == 0, done.stderr[-2000:]
  shards = sorted(n for n in os.listdir(str(tmp_path / "out")) if not n.endswith(".index.npz"))
  assert shards == ["train-00000-of-00002", "train-00001-of-00002"]
  assert len(open_dataset("tfrecord", str(tmp_path / "out"), "train")) == 6
  tool_helpers.assert_usage_error(
      tool_helpers.run_tool("tools.make_tfrecords", "--data_dir=%s" % (tmp_path / "nothing"),
                            "--output_dir=%s" % (tmp_path / "out2")), str(tmp_path / "nothing"))
