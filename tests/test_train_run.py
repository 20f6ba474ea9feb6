"""Whole runs of launch.train on a tiny model: what a run writes, resume, finished runs, adapted defaults, the NaN
guard, evaluation and the debugging emulation."""
import glob
import io
import json
import os
import re
import time

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from input import dataset_base
from input import datasets
from input.pipeline import InputPipeline
from launch import callbacks
from launch import evaluation
from launch import log_format
from launch import run_record
from tests import input_helpers
from tests import numpy_vit
from tests.train_helpers import TINY_ARGS, log_text, read_log, read_metrics, run_trainer
from tools import parse_log


def test_run_writes_log_lines_metrics_summary_checkpoint_and_its_own_description(tmp_path):
  d = str(tmp_path)
  summary = run_trainer(d, "--train_steps=8", "--iterations_per_loop=4", "--profiling", "--profiling_steps=1",
                        "--warmup_loops=1")
  train, evals, summaries = read_log(d)
  assert [r["step"] for r in train] == [4, 8]
  assert all(r["total"] == 8 and np.isfinite(r["loss"]) and r["img_per_sec"] > 0 for r in train)
  assert all("loss_scale" not in r for r in train)  # loss scaling is off: no scale columns
  assert len(evals) == 1 and evals[0]["examples"] == 359
  assert len(summaries) == 1 and summaries[0]["steps"] == 8 == summary["steps"]
  assert summaries[0]["final_top1"] == pytest.approx(evals[0]["top1"], abs=1e-5)
  # metrics.jsonl holds the same numbers as the text lines, unrounded.
  jtrain = read_metrics(d, "train")
  assert [r["step"] for r in jtrain] == [4, 8] and [r["steps"] for r in jtrain] == [4, 4]
  assert [r["loss"] for r in jtrain] == pytest.approx([r["loss"] for r in train], abs=1e-5)
  assert read_metrics(d, "eval")[0]["top1"] == pytest.approx(evals[0]["top1"], abs=1e-5)
  (start,) = read_metrics(d, "run")
  assert start["step"] == 0 and start["total"] == 8 and "--train_steps=8" in start["flags"]
  assert tf.train.latest_checkpoint(d).endswith("model.ckpt-8")
  model = run_record.run_model(d)
  assert model.class_names == [str(i) for i in range(10)] and model.image_size == 8
  assert (model.config.hidden_size, model.config.num_layers, model.config.patch_size) == (16, 1, 4)
  assert model.checkpoint.endswith("model.ckpt-8")
  events = glob.glob(os.path.join(d, "events.out.tfevents.*"))
  tags = {v.tag for path in events for e in tf.train.summary_iterator(path) for v in e.summary.value}
  assert {"loss", "lr", "img_per_sec", "top1", "top5", "flags"} <= tags
  traces = glob.glob(os.path.join(d, "profile", "timeline_*.json"))
  assert len(traces) == 1 and "traceEvents" in json.load(open(traces[0]))
  assert "first loop (graph build" in log_text(d)


def test_summary_throughput_equals_parse_log_on_the_same_run(tmp_path):
  d = str(tmp_path)
  summary = run_trainer(d, "--train_steps=30", "--iterations_per_loop=3", "--mode=train")
  from_jsonl = parse_log.summarize(d)[-1]
  assert from_jsonl["mean_ips"] == pytest.approx(summary["img_per_sec"], rel=1e-9)
  # The text lines round img/s and step_ms, so the text parse agrees to their precision.
  from_text = parse_log.summarize(_copy_log_alone(d, tmp_path))[-1]
  assert from_text["mean_ips"] == pytest.approx(summary["img_per_sec"], rel=2e-3)
  # The first loop (graph build) is never in it: the 9 later loops of 3 steps, 50 warm-up steps not available.
  timed = [r for r in read_metrics(d, "train")][1:]
  assert summary["img_per_sec"] == pytest.approx(
      sum(r["images"] for r in timed) / sum(r["seconds"] for r in timed), rel=1e-9)
  # Start-up is the first loop's time beyond its steps at the later loops' median pace, in the summary and its line.
  first = read_metrics(d, "train")[0]
  pace = np.median([r["seconds"] / r["steps"] for r in timed])
  assert summary["startup_s"] == pytest.approx(first["seconds"] - first["steps"] * pace)
  assert re.search(r"summary: .* startup_s %.1f" % summary["startup_s"], log_text(d))


def _copy_log_alone(d, tmp_path):
  path = str(tmp_path / "elsewhere" / "train_0.log")
  os.makedirs(os.path.dirname(path))
  with open(path, "w") as f:
    f.write(log_text(d))
  return path


def test_resume_continues_step_count_and_loss_curve(tmp_path):
  d = str(tmp_path)
  run_trainer(d, "--train_steps=12", "--iterations_per_loop=4", "--save_every_loops=1", "--mode=train")
  first, _, _ = read_log(d)
  # Pretend the run died right after the checkpoint of step 8 (the trainer resumes from the files, not from the
  # state file alone).
  for path in glob.glob(os.path.join(d, "model.ckpt-12.*")):
    os.remove(path)
  tf.train.update_checkpoint_state(d, os.path.join(d, "model.ckpt-8"))
  run_trainer(d, "--train_steps=12", "--iterations_per_loop=4", "--save_every_loops=1", "--mode=train")
  both, _, _ = read_log(d)
  resumed = both[len(first):]
  assert [r["step"] for r in first] == [4, 8, 12]
  assert [r["step"] for r in resumed] == [12]
  assert resumed[0]["loss"] == pytest.approx(first[-1]["loss"], rel=1e-4)
  assert resumed[0]["lr"] == pytest.approx(first[-1]["lr"], rel=1e-5)
  runs = parse_log.summarize(d, all_runs=True)
  assert [(r["run"], r["runs"], r["steps"]) for r in runs] == [(1, 2, 12), (2, 2, 12)]


def test_a_finished_run_reports_its_result_and_touches_nothing(tmp_path):
  d = str(tmp_path)
  first = run_trainer(d, "--train_steps=4", "--iterations_per_loop=4")
  before = {p: (os.path.getsize(p), os.path.getmtime(p)) for p in glob.glob(os.path.join(d, "*"))}
  again = run_trainer(d, "--train_steps=4", "--iterations_per_loop=4")
  assert again["step"] == 4
  assert again["final_top1"] == pytest.approx(first["final_top1"]) and again["img_per_sec"] == first["img_per_sec"]
  assert {p: (os.path.getsize(p), os.path.getmtime(p)) for p in glob.glob(os.path.join(d, "*"))} == before


def test_flags_txt_reproduces_the_run(tmp_path):
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  first = run_trainer(a, "--train_steps=6", "--iterations_per_loop=3", "--optimizer=adam", "--lr=0.01", "--seed=7")
  again = run_trainer(b, "--flagfile=%s" % os.path.join(a, run_record.FLAGS_FILE), "--model_dir=%s" % b, tiny=False)
  assert again["final_loss"] == pytest.approx(first["final_loss"], rel=1e-5)
  assert again["final_top1"] == pytest.approx(first["final_top1"], abs=1e-6)


def test_resume_with_changed_flags_names_them(tmp_path):
  d = str(tmp_path)
  run_trainer(d, "--train_steps=4", "--iterations_per_loop=4", "--mode=train")
  run_trainer(d, "--train_steps=8", "--iterations_per_loop=4", "--mode=train", "--lr=0.01", "--workers=1")
  (line,) = [l for l in log_text(d).splitlines() if "resuming with flags that differ" in l]
  assert "--lr=0.01 (was 0.05)" in line and "--train_steps=8 (was 4)" in line
  assert "workers" not in line  # does not change what is trained


def _image_folder(root, classes=3, per_class=12, val_per_class=3):
  for split, count in (("train", per_class), ("val", val_per_class)):
    for c in range(classes):
      for i in range(count):
        input_helpers.write_image(str(root / split / ("c%d" % c) / ("%d.png" % i)), input_helpers.noisy(c * 100 + i))
  return str(root)


def test_defaults_adapt_to_a_small_dataset_and_say_so(tmp_path):
  data = _image_folder(tmp_path / "data")
  d = str(tmp_path / "run")
  # 36 images in batches of 4: 9 steps per epoch, fewer than the default 10 per loop; a 9-image test split, smaller
  # than the default eval batch of 128; a 1-epoch run, shorter than the default 2 warm-up epochs.
  summary = run_trainer(d, "--data_dir=%s" % data, "--model=tiny", "--hidden_size=16", "--num_layers=1",
                        "--num_heads=2", "--mlp_dim=32", "--image_size=8", "--train_batch_size=4", "--num_epochs=1",
                        "--workers=0", tiny=False)
  assert summary["steps"] == 9
  text = log_text(d)
  assert "iterations_per_loop 10 -> 9" in text and "eval_batch_size 128 -> 9" in text
  assert "lr warm-up 18 -> 0 steps" in text
  assert read_metrics(d, "eval")[-1]["examples"] == 9
  recorded = run_record.read_flags(d)
  assert recorded["iterations_per_loop"] == "9" and recorded["eval_batch_size"] == "9"


def test_an_explicit_warmup_longer_than_the_run_is_kept_with_a_warning(tmp_path):
  d = str(tmp_path)
  run_trainer(d, "--train_steps=4", "--iterations_per_loop=4", "--lr_warmup_steps=10", "--mode=train")
  assert "--lr_warmup_steps=10 (10 steps) covers the whole 4-step run" in log_text(d)
  assert read_metrics(d, "train")[-1]["lr"] < 0.05 * 0.5  # still rising when the run ends


def test_init_checkpoint_says_what_it_loaded(tmp_path):
  # An official-layout file of the same shape trained on 21 classes at 8x8 pixels (a 2x2 grid).
  params = numpy_vit.random_official_params(16, 1, 2, 32, 4, 1 + 2 * 2, 21, seed=5)
  npz = str(tmp_path / "official.npz")
  np.savez(npz, **params)
  d = str(tmp_path / "run")
  run_trainer(d, "--init_checkpoint=%s" % npz, "--image_size=16", "--train_steps=2", "--iterations_per_loop=2",
              "--mode=train")
  text = log_text(d)
  assert "head re-initialised to zeros (21 -> 10 classes)" in text
  assert "position embeddings resized (2x2 -> 4x4 grid)" in text


def test_a_diverging_loss_stops_the_run_with_one_line_and_keeps_the_last_checkpoint(tmp_path):
  d = str(tmp_path)
  with pytest.raises(callbacks.TrainingStopped) as err:
    # A huge learning rate without clipping blows the weights up within a few steps.
    run_trainer(d, "--train_steps=40", "--iterations_per_loop=2", "--save_every_loops=1", "--lr=1e12",
                "--grad_clip_norm=0", "--optimizer=sgd", "--mode=train")
  message = str(err.value)
  assert "training loss is nan" in message or "training loss is inf" in message
  assert "\n" not in message
  saved = tf.train.latest_checkpoint(d)
  stopped_at = int(message.split(" at step ")[1].split(":")[0])
  assert saved is None or int(saved.rsplit("-", 1)[1]) < stopped_at  # the diverged weights were never saved


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
  assert again["final_top1"] == pytest.approx(evals[-1]["top1"], abs=1e-5)  # the log keeps 5 decimals


def test_over_dump_names_the_first_nonfinite_op_and_data_dump_saves_npy(tmp_path):
  d = str(tmp_path)
  with pytest.raises(callbacks.TrainingStopped):
    run_trainer(d, "--train_steps=8", "--iterations_per_loop=1", "--lr=1e12", "--grad_clip_norm=0", "--optimizer=sgd",
                "--over_dump", "--data_dump_flag", "--data_dump_step=2", "--mode=train")
  reports = glob.glob(os.path.join(d, "overflow", "overflow_*.txt"))
  assert reports and "first inf/NaN at step" in open(sorted(reports)[0]).read()
  dumped = glob.glob(os.path.join(d, "data_dump", "step_2", "*.npy"))
  names = {os.path.basename(p)[:-4] for p in dumped}
  assert {"images", "labels", "logits", "loss"} <= names
  assert any(n.startswith("grad__vit__head__kernel") for n in names)
  assert np.load(os.path.join(d, "data_dump", "step_2", "images.npy")).shape == (32, 8, 8, 3)


def test_the_data_dump_probe_runs_a_model_with_stochastic_depth(tmp_path):
  d = str(tmp_path)
  summary = run_trainer(d, "--train_steps=4", "--iterations_per_loop=1", "--num_layers=2", "--drop_path=0.2",
                        "--data_dump_flag", "--data_dump_step=2", "--mode=train")
  assert summary["steps"] == 4
  assert os.path.exists(os.path.join(d, "data_dump", "step_2", "logits.npy"))


def _final_weights(model_dir):
  reader = tf.train.NewCheckpointReader(tf.train.latest_checkpoint(model_dir))
  return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map() if not n.startswith("global_step")}


@pytest.mark.parametrize("layout", ["official", "tfds"])
def test_a_folder_and_its_tfrecords_train_the_same_weights(tmp_path, layout):
  from tools import make_tfrecords  # pylint: disable=g-import-not-at-top
  folder = _image_folder(tmp_path / "images", classes=3, per_class=12, val_per_class=3)
  make_tfrecords.convert(folder, str(tmp_path / "records"), layout, splits=["train", "validation"], num_shards=2,
                         out=io.StringIO())
  args = [
      "--train_steps=6", "--iterations_per_loop=3", "--train_batch_size=8", "--eval_batch_size=9",
      "--augment=inception", "--workers=1"
  ]
  run_trainer(str(tmp_path / "from_folder"), "--data_dir=%s" % folder, *args)
  run_trainer(str(tmp_path / "from_records"), "--data_dir=%s" % (tmp_path / "records"), *args)
  a, b = _final_weights(str(tmp_path / "from_folder")), _final_weights(str(tmp_path / "from_records"))
  assert sorted(a) == sorted(b) and len(a) > 10
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)
  _, folder_evals, _ = read_log(str(tmp_path / "from_folder"))
  _, record_evals, _ = read_log(str(tmp_path / "from_records"))
  assert folder_evals == record_evals and folder_evals  # the same 9 validation images, the same accuracy


def test_the_pixel_budget_applies_to_training_images_too(tmp_path):
  data = _image_folder(tmp_path / "data", classes=2, per_class=6, val_per_class=2)
  big = str(tmp_path / "data" / "train" / "c0" / "big.png")
  input_helpers.write_image(big, input_helpers.noisy(7, size=(40, 40)))  # 1,600 pixels; the others have 768
  d = str(tmp_path / "run")
  run_trainer(d, "--data_dir=%s" % data, "--max_image_pixels=1000", "--train_batch_size=4", "--train_steps=6",
              "--iterations_per_loop=3", "--mode=train", "--workers=1")
  text = log_text(d)
  assert big in text and "1600 pixels exceeds the pixel budget of 1000" in text


def test_the_summary_says_how_much_of_the_loop_waited_for_slow_input_workers(tmp_path, monkeypatch):
  data = _image_folder(tmp_path / "data", classes=2, per_class=8, val_per_class=2)
  read_encoded = dataset_base.FileDataset.read_encoded

  def slow_read(self, i):
    time.sleep(0.1)  # 0.4 s per batch of 4 against a step of milliseconds (tens on a loaded machine): data-bound
    return read_encoded(self, i)

  monkeypatch.setattr(dataset_base.FileDataset, "read_encoded", slow_read)
  d = str(tmp_path / "run")
  summary = run_trainer(d, "--data_dir=%s" % data, "--train_batch_size=4", "--train_steps=12",
                        "--iterations_per_loop=3", "--mode=train", "--workers=1")
  assert 0.5 < summary["input_wait"] <= 1.0
  (line,) = [l for l in log_text(d).splitlines() if "summary: " in l]
  assert log_format.parse_line(line)[1]["input_wait"] == pytest.approx(summary["input_wait"], abs=1e-3)
  assert "input_wait" not in run_trainer(str(tmp_path / "local"), "--train_steps=3", "--iterations_per_loop=3",
                                         "--mode=train", "--workers=0")
