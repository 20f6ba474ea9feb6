"""Whole runs of launch.train on a tiny model: logs, resume, evaluation, files, debugging emulation."""
import glob
import json
import os

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from input import datasets
from input.pipeline import InputPipeline
from launch import evaluation
from tests.train_helpers import read_log, run_trainer


def test_run_writes_log_lines_summary_checkpoint_and_class_names(tmp_path):
  d = str(tmp_path)
  run_trainer(d, "--train_steps=8", "--iterations_per_loop=4", "--profiling", "--profiling_steps=1", "--warmup_loops=1")
  train, evals, summary = read_log(d)
  assert [r["step"] for r in train] == [4, 8]
  assert all(r["total"] == 8 and np.isfinite(r["loss"]) and r["ips"] > 0 for r in train)
  assert len(evals) == 1 and evals[0]["examples"] == 359
  assert len(summary) == 1 and summary[0]["steps"] == 8
  assert summary[0]["final_top1"] == pytest.approx(evals[0]["top1"], abs=1e-5)
  assert tf.train.latest_checkpoint(d).endswith("model.ckpt-8")
  with open(os.path.join(d, "class_names.txt")) as f:
    assert f.read().split() == [str(i) for i in range(10)]
  assert glob.glob(os.path.join(d, "events.out.tfevents.*"))
  traces = glob.glob(os.path.join(d, "profile", "timeline_*.json"))
  assert len(traces) == 1 and "traceEvents" in json.load(open(traces[0]))


def test_resume_continues_step_count_and_loss_curve(tmp_path):
  d = str(tmp_path)
  run_trainer(d, "--train_steps=12", "--iterations_per_loop=4", "--save_every_loops=1", "--mode=train")
  first, _, _ = read_log(d)
  # Pretend the run died right after the checkpoint of step 8.
  tf.train.update_checkpoint_state(d, os.path.join(d, "model.ckpt-8"))
  run_trainer(d, "--train_steps=12", "--iterations_per_loop=4", "--save_every_loops=1", "--mode=train")
  both, _, _ = read_log(d)
  resumed = both[len(first):]
  assert [r["step"] for r in first] == [4, 8, 12]
  assert [r["step"] for r in resumed] == [12]
  assert resumed[0]["loss"] == pytest.approx(first[-1]["loss"], rel=1e-4)
  assert resumed[0]["lr"] == pytest.approx(first[-1]["lr"], rel=1e-5)


def test_eval_counts_every_example_once():
  ds = datasets.open_dataset("digits", None, "test")
  with InputPipeline(ds, 8, 64, False, workers=0) as pipe:
    # A "model" ranking the classes 0 > 1 > ... > 9 for every image is right (top-1) exactly on the class-0
    # examples and top-5 on classes 0-4; padding rows must not count.
    graph = evaluation.build_eval(
        pipe, lambda images: -tf.range(10, dtype=tf.float32)[None, :] + 0.0 * tf.cast(images[:, 0, 0, 0], tf.float32)
        [:, None])
    with tf.Session() as sess:
      result = evaluation.evaluate(sess, graph)
  labels = np.array([ds.label(i) for i in range(len(ds))])
  assert result["examples"] == len(ds) == 359
  assert result["top1"] == pytest.approx(np.mean(labels == 0))
  assert result["top5"] == pytest.approx(np.mean(labels < 5))


def test_eval_mode_and_init_checkpoint_reproduce_the_trained_accuracy(tmp_path):
  d = str(tmp_path / "a")
  run_trainer(d, "--train_steps=8", "--iterations_per_loop=4")
  _, evals, _ = read_log(d)
  again = run_trainer(str(tmp_path / "b"), "--mode=eval", "--init_checkpoint=%s" % d)
  assert again["top1"] == pytest.approx(evals[-1]["top1"], abs=1e-5)  # the log keeps 5 decimals


def test_over_dump_names_the_first_nonfinite_op_and_data_dump_saves_npy(tmp_path):
  d = str(tmp_path)
  # A huge learning rate without clipping blows the weights up within a few steps.
  run_trainer(d, "--train_steps=8", "--iterations_per_loop=1", "--lr=1e12", "--grad_clip_norm=0", "--optimizer=sgd",
              "--over_dump", "--data_dump_flag", "--data_dump_step=2", "--mode=train")
  reports = glob.glob(os.path.join(d, "overflow", "overflow_*.txt"))
  assert reports and "first inf/NaN at step" in open(sorted(reports)[0]).read()
  dumped = glob.glob(os.path.join(d, "data_dump", "step_2", "*.npy"))
  names = {os.path.basename(p)[:-4] for p in dumped}
  assert {"images", "labels", "logits", "loss"} <= names
  assert any(n.startswith("grad__vit__head__kernel") for n in names)
  assert np.load(os.path.join(d, "data_dump", "step_2", "images.npy")).shape == (32, 8, 8, 3)
