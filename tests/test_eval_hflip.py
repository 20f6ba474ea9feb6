"""Test-time flip averaging (--eval_hflip): the hflip views of launch/evaluation.py against numpy, and the trainer's
eval line, metrics record and tools.parse_log reading them."""
import collections

import numpy as np
import tensorflow.compat.v1 as tf

from input.dataset_base import ArrayDataset
from input.pipeline import InputPipeline
from launch import evaluation
from launch import log_format
from tests import train_helpers
from tools import parse_log

SIZE, CLASSES = 8, 3


def _images(seed, count):
  return np.random.RandomState(seed).randint(0, 256, (count, SIZE, SIZE, 3)).astype(np.uint8)


def _weights():
  # A linear model over the raw pixels, deliberately not mirror-symmetric.
  return np.random.RandomState(7).normal(size=(SIZE * SIZE * 3, CLASSES)).astype(np.float32) / 50


def _logits(images, weights):
  return images.reshape(len(images), -1).astype(np.float32) @ weights


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _evaluate(images, labels, views, hflip, batch=4):
  ds = ArrayDataset("t", "val", ["a", "b", "c"], images, labels)
  with tf.Graph().as_default(), InputPipeline(ds, SIZE, batch, False, workers=0) as pipe:
    graph = evaluation.build_eval(pipe, views, hflip=hflip)
    with tf.Session() as sess:
      return graph.views, evaluation.evaluate(sess, graph)


def _linear_views(weights):
  # Built inside the eval graph: the constants are made when the views are called.
  def model(matrix):
    return lambda images: tf.matmul(tf.reshape(tf.cast(images, tf.float32), [-1, SIZE * SIZE * 3]), tf.constant(matrix))

  return collections.OrderedDict([("", model(weights)), ("ema", model(2 * weights))])


def test_each_view_gets_a_flip_averaged_twin_that_matches_numpy():
  images, weights = _images(0, 10), _weights()  # 10 examples in batches of 4: the last batch is padded and masked
  mirrored = images[:, :, ::-1]

  def numpy_views(w):
    plain = _logits(images, w)
    return plain.argmax(-1), (_softmax(plain) + _softmax(_logits(mirrored, w))).argmax(-1)

  plain, averaged = numpy_views(weights)
  assert (plain != averaged).any()  # the flip changes some answers: the labels below tell the two views apart
  names, result = _evaluate(images, averaged, _linear_views(weights), hflip=True)
  assert names == ["", "hflip", "ema", "ema_hflip"] and result["examples"] == 10
  assert result["hflip_top1"] == 1.0 and result["top1"] == np.mean(plain == averaged)
  ema_plain, ema_averaged = numpy_views(2 * weights)
  assert result["ema_top1"] == np.mean(ema_plain == averaged)
  assert result["ema_hflip_top1"] == np.mean(ema_averaged == averaged)
  assert result["hflip_top5"] == result["ema_hflip_top5"] == 1.0  # 3 classes: the top 5 hold every one


def test_flip_averaging_does_not_care_which_way_the_test_images_face():
  images, weights = _images(2, 12), _weights()
  labels = np.random.RandomState(3).randint(0, CLASSES, 12)
  views = _linear_views(weights)
  _, facing = _evaluate(images, labels, views, hflip=True)
  _, mirrored = _evaluate(np.ascontiguousarray(images[:, :, ::-1]), labels, views, hflip=True)
  assert facing["hflip_top1"] == mirrored["hflip_top1"] and facing["ema_hflip_top1"] == mirrored["ema_hflip_top1"]
  assert facing["top1"] != mirrored["top1"]  # the plain views do care


def test_without_the_flag_the_views_are_the_plain_ones():
  names, result = _evaluate(_images(0, 8), np.zeros(8, np.int64), _linear_views(_weights()), hflip=False)
  assert names == ["", "ema"] and not any("hflip" in key for key in result)


def test_the_eval_line_carries_every_view_and_reads_back():
  record = collections.OrderedDict([("event", "eval"), ("epoch", 1.0), ("step", 10), ("examples", 100), ("top1", 0.5),
                                    ("top5", 0.9), ("hflip_top1", 0.52), ("hflip_top5", 0.91), ("ema_top1", 0.6),
                                    ("ema_top5", 0.92), ("ema_hflip_top1", 0.63), ("ema_hflip_top5", 0.93)])
  line = log_format.eval_line(record)
  assert line.endswith("hflip_top1 0.52000 hflip_top5 0.91000 ema_top1 0.60000 ema_top5 0.92000 "
                       "ema_hflip_top1 0.63000 ema_hflip_top5 0.93000")
  kind, fields = log_format.parse_line("I1126 10:00:00.000000 123 train.py:45] " + line)
  assert kind == "eval" and fields == {k: v for k, v in record.items() if k != "event"}


def test_a_run_with_eval_hflip_logs_the_flip_views_and_parse_log_reports_them(tmp_path):
  model_dir = str(tmp_path / "run")
  train_helpers.run_trainer(model_dir, "--train_steps=4", "--iterations_per_loop=2", "--eval_every_loops=1",
                            "--eval_hflip", "--ema_decay=0.9", "--hflip")
  evals = train_helpers.read_metrics(model_dir, "eval")
  views = ("top1", "hflip_top1", "ema_top1", "ema_hflip_top1")
  assert len(evals) == 2 and all(0 <= e[k] <= 1 for e in evals for k in views)
  assert [{
      k: e[k] for k in views
  } for e in train_helpers.read_log(model_dir)[1]] == [{
      k: round(e[k], 5) for k in views
  } for e in evals]
  (summary,) = train_helpers.read_metrics(model_dir, "summary")
  assert [summary["final_" + k] for k in views] == [evals[-1][k] for k in views]
  (line,) = train_helpers.read_log(model_dir)[2]  # the text line carries them too
  assert [line["final_" + k] for k in views] == [round(evals[-1][k], 5) for k in views]
  (result,) = parse_log.summarize(model_dir)
  assert result["final_hflip_top1"] == evals[-1]["hflip_top1"]
  assert result["final_ema_hflip_top1"] == evals[-1]["ema_hflip_top1"]
  assert result["best_hflip_top1"] == max(e["hflip_top1"] for e in evals)


def test_mode_eval_reports_the_flip_views_of_a_checkpoint_with_the_same_plain_accuracy(tmp_path):
  trained = str(tmp_path / "run")
  train_helpers.run_trainer(trained, "--train_steps=4", "--iterations_per_loop=2")
  (last,) = train_helpers.read_metrics(trained, "eval")
  again = str(tmp_path / "eval")
  train_helpers.run_trainer(again, "--mode=eval", "--eval_hflip", "--init_checkpoint=%s" % trained)
  (record,) = train_helpers.read_metrics(again, "eval")
  assert record["top1"] == last["top1"] and 0 <= record["hflip_top1"] <= 1 and "hflip_top1" not in last
