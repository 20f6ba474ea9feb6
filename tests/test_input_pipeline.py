"""InputPipeline: determinism across worker counts, reshuffling, shards, resume (also with every augmentation and
mixing on), exact-once eval, bad files (counted per file, said through the input logger only), unreadable datasets,
and the tf.data hand-off (3 tensors, or 5 with mixing)."""
import logging
import os
import signal

import cv2
import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from input.augment import AugmentSpec
from input.dataset_base import ArrayDataset, FileDataset, UnreadableDatasetError
from input.datasets import open_dataset
from input.mixing import MixSpec
from input.pipeline import InputPipeline
from vit_raw.model_input import scale_input
from input.sampling import BatchPlan
from launch import evaluation
from tests.input_helpers import encode, noisy, write_bad_files, write_bytes, write_image


def _indexed_dataset(n, split="val"):
  """Example i is an 8x8 image filled with i (mod 256) and labelled i: rows can be traced back."""
  images = (np.arange(n) % 256).astype(np.uint8)[:, None, None, None] * np.ones((1, 8, 8, 3), np.uint8)
  return ArrayDataset("indexed", split, [str(i) for i in range(n)], images, np.arange(n))


def _take(pipe, count):
  gen = pipe.batches()
  return [next(gen) for _ in range(count)]


@pytest.fixture(scope="module")
def digits():
  return open_dataset("digits", split="train")


def test_same_batches_with_0_1_2_workers(digits):
  runs = []
  for workers in (0, 1, 2):
    with InputPipeline(digits, 12, 200, True, workers=workers, seed=7) as pipe:
      assert pipe.steps_per_epoch == 7
      runs.append(_take(pipe, 9))  # crosses into epoch 1
  for other in runs[1:]:
    for (a_img, a_lab, a_mask), (b_img, b_lab, b_mask) in zip(runs[0], other):
      assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab) and np.all(b_mask == 1)
  assert runs[0][0][0].shape == (200, 12, 12, 3) and runs[0][0][0].dtype == np.uint8


def test_every_epoch_is_reshuffled_and_seed_matters():
  plan = BatchPlan(100, 10, True, seed=1)
  e0, e1 = plan.epoch_shard(0).copy(), plan.epoch_shard(1).copy()
  assert sorted(e0) == sorted(e1) == list(range(100)) and not np.array_equal(e0, e1)
  assert not np.array_equal(e0, BatchPlan(100, 10, True, seed=2).epoch_shard(0))
  assert np.array_equal(plan.batch(10)[1], e1[:10]) and plan.batch(10)[0] == 1


def test_train_shards_disjoint_and_covering():
  for epoch in (0, 3):
    shards = [BatchPlan(12, 2, True, seed=5, rank=r, num_ranks=3).epoch_shard(epoch) for r in range(3)]
    together = np.concatenate(shards)
    assert len(set(together)) == 12 and sorted(together) == list(range(12))
  uneven = [set(BatchPlan(14, 2, True, rank=r, num_ranks=3).epoch_shard(0)) for r in range(3)]
  assert [len(s) for s in uneven] == [4, 4, 4] and not (uneven[0] & uneven[1] or uneven[1] & uneven[2])


def test_start_batch_resumes_the_uninterrupted_sequence(digits):
  with InputPipeline(digits, 8, 300, True, workers=2, seed=3) as pipe:
    full = _take(pipe, 7)
  with InputPipeline(digits, 8, 300, True, workers=1, seed=3, start_batch=4) as pipe:
    resumed = _take(pipe, 3)
  for a, b in zip(full[4:], resumed):
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


@pytest.mark.parametrize("num_ranks", [1, 2])
def test_eval_sees_every_example_exactly_once(num_ranks):
  ds = _indexed_dataset(23)
  seen = []
  for rank in range(num_ranks):
    with InputPipeline(ds, 8, 5, False, workers=2, rank=rank, num_ranks=num_ranks) as pipe:
      batches = list(pipe.batches())
      assert len(batches) == pipe.steps_per_epoch == (5 if num_ranks == 1 else 3)
      for images, labels, mask in batches:
        assert images.shape == (5, 8, 8, 3)
        for row in np.flatnonzero(mask):
          assert images[row].min() == images[row].max() == labels[row]  # pixels belong to the label
          seen.append(int(labels[row]))
        assert np.all(images[mask == 0] == 0)
      assert int(sum(m.sum() for _, _, m in batches)) == pipe.num_examples
  assert sorted(seen) == list(range(23))


def _folder_with_bad_files(root):
  for i in range(10):
    write_image(str(root / ("c%d" % (i % 2)) / ("%d.png" % i)), noisy(i))
  return write_bad_files(str(root / "c1"))


def test_bad_files_are_skipped_counted_and_replaced_deterministically(tmp_path, caplog):
  bad = _folder_with_bad_files(tmp_path)
  ds = open_dataset("imagefolder", str(tmp_path), "train")
  assert len(ds) == 14
  caplog.set_level(logging.WARNING, logger="input")
  runs = []
  for workers in (1, 2):
    with InputPipeline(ds, 16, 7, True, workers=workers, seed=0) as pipe:
      batches = _take(pipe, 2 * pipe.steps_per_epoch)  # two full epochs: every bad file met twice
      assert pipe.skipped == 4 and set(pipe.bad_files) == set(bad.values())  # counted per file, not per meeting
      runs.append((batches, pipe.skipped))
  assert runs[0][1] == runs[1][1]
  for (a_img, a_lab, _), (b_img, b_lab, _) in zip(runs[0][0], runs[1][0]):
    assert a_img.shape == (7, 16, 16, 3) and np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
  warned = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage() and ": " in r.getMessage()]
  for kind, path in bad.items():
    assert sum(path in line for line in warned) == 2, kind  # one line per file per pipeline, not per batch
  assert any("truncated" in line for line in warned) and any("zero-byte" in line for line in warned)
  assert any("bad files skipped so far" in r.getMessage() for r in caplog.records)  # epoch-end report


def test_bad_files_in_eval_are_masked_and_counted(tmp_path):
  _folder_with_bad_files(tmp_path)
  ds = open_dataset("imagefolder", str(tmp_path), "val")
  with InputPipeline(ds, 16, 4, False, workers=2) as pipe:
    batches = list(pipe.batches())
    assert pipe.skipped == 4 and len(batches) == 4
    assert sum(m.sum() for _, _, m in batches) == 10  # evaluated count excludes the 4 bad files


@pytest.mark.parametrize("workers", [0, 2])
def test_an_image_deleted_after_listing_is_skipped_and_counted_like_a_corrupt_one(tmp_path, workers):
  for i in range(6):
    write_image(str(tmp_path / "val" / ("c%d" % (i % 2)) / ("%d.png" % i)), noisy(i))
  ds = open_dataset("imagefolder", str(tmp_path), "val")
  gone = ds.paths[3]
  os.remove(gone)  # between listing and reading, as a data set being cleaned up under a running job
  with InputPipeline(ds, 8, 4, False, workers=workers) as pipe:
    batches = list(pipe.batches())
    assert pipe.skipped == 1 and list(pipe.bad_files) == [gone] and "does not exist" in pipe.bad_files[gone]
    assert sum(m.sum() for _, _, m in batches) == 5  # evaluated count excludes the vanished file


def test_tf_dataset_static_shapes_and_values(digits):
  with InputPipeline(digits, (8, 12), 50, True, workers=2, seed=11) as pipe:
    dataset = pipe.tf_dataset()
    images, labels, mask = tf.data.make_one_shot_iterator(dataset).get_next() \
        if hasattr(tf.data, "make_one_shot_iterator") else dataset.make_one_shot_iterator().get_next()
    assert images.shape.as_list() == [50, 8, 12, 3] and images.dtype == tf.uint8
    assert labels.shape.as_list() == [50] and labels.dtype == tf.int32
    assert mask.shape.as_list() == [50] and mask.dtype == tf.float32
    scaled = scale_input(images, tf.float16)
    with tf.Session() as sess:
      got = [sess.run([images, labels, scaled]) for _ in range(3)]
    expected = _take(pipe, 3)
  for (img, lab, sc), (e_img, e_lab, _) in zip(got, expected):
    assert np.array_equal(img, e_img) and np.array_equal(lab, e_lab)
    np.testing.assert_allclose(sc.astype(np.float32), img / 127.5 - 1.0, atol=1e-3)
  assert sc.dtype == np.float16


def test_tf_dataset_runs_without_tf_data_autotuning(digits):
  # With autotuning on, TF 2.21 re-initialised the eval iterator only after the old one's model thread woke from
  # its growing sleep: 4-18 s per evaluation in the trainer (docs/benchmarks.md). Nothing here is tunable.
  with tf.Graph().as_default() as graph, InputPipeline(digits, 8, 50, False, workers=0) as pipe:
    dataset = pipe.tf_dataset()
    carried = [op for op in graph.get_operations() if op.type == "OptionsDataset"]
    if carried:  # TF 2.x: the options live in the graph, as the dataset op the session runs
      from tensorflow.core.framework import dataset_options_pb2  # pylint: disable=g-import-not-at-top
      options = dataset_options_pb2.Options.FromString(carried[-1].get_attr("serialized_options"))
      autotune = options.autotune_options.enabled
    else:  # TF 1.15: the options are the dataset object's
      autotune = dataset.options().experimental_optimization.autotune
  assert autotune is False


def test_scale_input_maps_0_and_255_to_minus_one_and_one():
  value = tf.constant([[0, 255, 128]], tf.uint8)
  with tf.Session() as sess:
    out = sess.run(scale_input(value))
  assert out[0, 0] == -1.0 and out[0, 1] == 1.0  # exact ends, no float32 drift
  np.testing.assert_allclose(out[0, 2], 128 / 127.5 - 1, atol=1e-7)


def test_a_new_iterator_restarts_eval_and_supersedes_the_old_one():
  ds = _indexed_dataset(40)
  with InputPipeline(ds, 8, 4, False, workers=2, num_slots=3) as pipe:
    first = pipe.batches()
    next(first)
    next(first)  # abandoned with slots in flight and results waiting
    for _ in range(3):  # each full pass still sees every example once: no slot was lost
      labels = [int(l) for _, lab, m in pipe.batches() for l, keep in zip(lab, m) if keep]
      assert labels == list(range(40))
    with pytest.raises(RuntimeError, match="superseded"):
      next(first)


def test_eval_passes_are_numbered_and_a_pass_without_examples_is_said(tmp_path, caplog):
  bad = write_bad_files(str(tmp_path / "c"))
  ds = FileDataset("imagefolder", "val", ["c"], sorted(bad.values()), [0] * len(bad))
  caplog.set_level(logging.INFO, logger="input")
  with InputPipeline(ds, 8, 3, False, workers=1) as pipe:
    graph = evaluation.build_eval(pipe, lambda images: tf.zeros([3, 4]) + tf.cast(images[:, 0, 0, :1], tf.float32))
    with tf.Session() as sess:
      results = [evaluation.evaluate(sess, graph) for _ in range(2)]
  assert all(r["examples"] == 0 and np.isnan(r["top1"]) and np.isnan(r["top5"]) for r in results)  # not 0.0
  counts = [r.getMessage() for r in caplog.records if "bad files skipped so far" in r.getMessage()]
  assert counts == ["input: 4 bad files skipped so far (eval pass %d of imagefolder val)" % p for p in (1, 2)]
  assert sum("eval pass 2 of imagefolder val had no usable example: all 4 were skipped" in r.getMessage()
             for r in caplog.records) == 1


@pytest.mark.parametrize("workers", [0, 2])
def test_an_all_unreadable_dataset_stops_training_with_one_line(tmp_path, workers):
  paths = [
      write_bytes(str(tmp_path / ("%d.jpg" % i)), b"version https://git-lfs.github.com/spec/v1\n") for i in range(5)
  ]
  ds = FileDataset("imagefolder", "train", ["a", "b"], paths, [0, 1, 0, 1, 0], source=str(tmp_path))
  with InputPipeline(ds, 8, 2, True, workers=workers) as pipe:
    with pytest.raises(UnreadableDatasetError) as info:
      next(pipe.batches())
    assert pipe.error is info.value
  message = str(info.value)
  assert "\n" not in message and message.startswith(
      "imagefolder train (%s): 21 files in a row, none could be read" % tmp_path)
  assert message.count("a Git LFS pointer file") == 3 and "(and 2 more)" in message


def test_every_input_message_goes_through_the_input_logger_and_nothing_is_printed(tmp_path, capfd):
  bad = _folder_with_bad_files(tmp_path)
  damaged = bytearray(encode(".png", noisy(4, (32, 32))))
  start = damaged.find(b"IDAT") + 4
  damaged[start + 10:start + 30] = b"\x00" * 20  # libpng prints an error for it
  bad["libpng"] = write_bytes(str(tmp_path / "c0" / "damaged.png"), bytes(damaged))
  os.symlink("..", str(tmp_path / "c0" / "loop"))
  os.mkfifo(str(tmp_path / "c1" / "fifo.jpg"))
  listed = [str(tmp_path / "c0" / "loop"), str(tmp_path / "c1" / "fifo.jpg")]
  seen = []
  handler = logging.Handler(logging.INFO)
  handler.emit = lambda record: seen.append(record.getMessage())
  logger = logging.getLogger("input")
  old_level, old_propagate = logger.level, logger.propagate
  logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  logger.propagate = False  # only the handler a trainer would add: no pytest capture, no last-resort printing
  try:
    ds = open_dataset("imagefolder", str(tmp_path), "train")
    with InputPipeline(ds, 16, 5, True, workers=2, seed=1) as pipe:
      _take(pipe, 3 * pipe.steps_per_epoch)
  finally:
    logger.removeHandler(handler)
    logger.setLevel(old_level)
    logger.propagate = old_propagate
  for path in list(bad.values()) + listed:
    assert sum(line.startswith("input: skipped %s: " % path) for line in seen) == 1, path
  assert sum("bad files skipped so far (epoch" in line for line in seen) == 3
  assert capfd.readouterr() == ("", "")  # workers' libpng noise included


def test_workers_start_after_the_parent_used_opencv_threads(digits):
  # The parent's OpenCV thread pool must not be inherited half-alive: cv2.setNumThreads in the forked worker
  # used to wait forever on it.
  cv2.GaussianBlur(np.zeros((1500, 1500, 3), np.float32), (31, 31), 5)
  signal.signal(signal.SIGALRM, lambda *_: pytest.fail("the workers hung at start-up"))
  signal.alarm(60)
  try:
    with InputPipeline(digits, 8, 16, True, workers=2, seed=0) as pipe:
      images, _, _ = _take(pipe, 4)[-1]
  finally:
    signal.alarm(0)
  assert images.shape == (16, 8, 8, 3)


def _every_option():
  return dict(augment=AugmentSpec("pad", 2, True, "rand-m9-mstd0.5-inc1", 0.4, 0.5),
              mix=MixSpec(0.8, 1.0, prob=0.9, switch_prob=0.5, off_epoch=1))


def test_every_option_gives_the_same_batches_with_0_1_2_workers(digits):
  runs = []
  for workers in (0, 1, 2):
    with InputPipeline(digits, 12, 200, True, workers=workers, seed=7, **_every_option()) as pipe:
      runs.append(_take(pipe, 9))  # crosses into epoch 1, where mixing is off
  for other in runs[1:]:
    for a, b in zip(runs[0], other):
      assert len(a) == len(b) == 5 and all(np.array_equal(x, y) for x, y in zip(a, b))
  assert any(float(batch[4][0]) < 1 for batch in runs[0][:7]) and all(np.all(b[4] == 1) for b in runs[0][7:])


def test_every_option_resumes_at_start_batch_as_the_uninterrupted_sequence(digits):
  with InputPipeline(digits, 8, 300, True, workers=2, seed=3, **_every_option()) as pipe:
    full = _take(pipe, 7)
  with InputPipeline(digits, 8, 300, True, workers=1, seed=3, start_batch=4, **_every_option()) as pipe:
    resumed = _take(pipe, 3)
  for a, b in zip(full[4:], resumed):
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_tf_dataset_with_mixing_yields_five_static_tensors(digits):
  with InputPipeline(digits, 8, 16, True, workers=1, seed=2, **_every_option()) as pipe:
    dataset = pipe.tf_dataset()
    tensors = tf.data.make_one_shot_iterator(dataset).get_next() \
        if hasattr(tf.data, "make_one_shot_iterator") else dataset.make_one_shot_iterator().get_next()
    assert [t.dtype for t in tensors] == [tf.uint8, tf.int32, tf.float32, tf.int32, tf.float32]
    assert [t.shape.as_list() for t in tensors] == [[16, 8, 8, 3], [16], [16], [16], [16]]
    with tf.Session() as sess:
      got = [sess.run(tensors) for _ in range(2)]
    expected = _take(pipe, 2)
  for a, b in zip(got, expected):
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
