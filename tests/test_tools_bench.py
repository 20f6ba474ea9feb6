"""The benchmark commands run end to end on tiny settings and their printed numbers agree with each other.

Speed itself is never asserted (benchmarks measure it); what is checked is that each command runs, measures what
it says, and that the numbers it derives (ratios, GFLOP per image) follow from the numbers it prints.
"""
import json
import os
import re
import statistics
import subprocess
import sys

import pytest

from launch import metrics
from launch import spawn
from vit_raw import configs
from vit_raw import model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DISTRIBUTED_ENGINES = spawn.installed_engines()


def _run(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  result = subprocess.run([sys.executable, "-m"] + list(args), cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=600)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  return result.stdout


def _number(pattern, text):
  match = re.search(pattern, text)
  assert match, "%r not in:\n%s" % (pattern, text)
  return float(match.group(1))


def test_bench_model_times_the_trainers_step_and_counts_its_flops():
  out = _run("tools.bench_model", "--model=ViT-Ti/16", "--image_size=32", "--batch_size=2", "--steps=2", "--warmup=1",
             "--matmul_size=128", "--optimizer=momentum")
  per_image = 3 * model.forward_flops(configs.get_config("ViT-Ti/16"), 32, 1000) / 1e9
  assert _number(r"\(([0-9.]+) GFLOP/img\)", out) == pytest.approx(per_image, abs=0.05)
  seconds = _number(r"([0-9.]+) s/step median", out)
  assert _number(r"([0-9.]+) img/s \(best", out) == pytest.approx(2 / seconds, rel=0.02)
  assert 0 < _number(r"ratio ([0-9.]+)", out)
  assert _number(r"peak RSS ([0-9.]+) MB", out) > 50  # a TensorFlow process with a model is more than 50 MB
  shares = re.findall(r"([a-z ]+) ([0-9.]+) %", out.split("op time by kind", 1)[1])
  assert [k.strip(" ,:") for k, _ in shares
         ] == ["matmul", "layer norm", "gelu", "softmax", "bias add", "casts", "optimizer", "xla cluster", "other"]
  assert sum(float(v) for _, v in shares) == pytest.approx(100.0, abs=0.5)
  assert float(dict((k.strip(" ,:"), v) for k, v in shares)["matmul"]) > 0


def test_bench_loop_reports_each_n_and_their_ratio():
  out = _run("tools.bench_loop", "--steps=20", "--loops=1,5", "--repeats=1")
  one = _number(r"iterations_per_loop=1 +([0-9.]+) steps/s", out)
  five = _number(r"iterations_per_loop=5 +([0-9.]+) steps/s", out)
  assert _number(r"ratio N=5 / N=1: ([0-9.]+)x", out) == pytest.approx(five / one, rel=0.01)


def test_bench_input_compares_both_pipelines_on_generated_jpegs(tmp_path):
  data = str(tmp_path / "jpegs")
  assert "wrote 16 500x375 JPEGs in 2 classes" in _run("tools.bench_input", "--make_fake_data=%s" % data,
                                                       "--num_images=16", "--num_classes=2")
  out = _run("tools.bench_input", "--data_dir=%s" % data, "--image_size=32", "--batch_size=4", "--workers=1",
             "--seconds=0.3", "--rounds=1", "--warmup_batches=1")
  ours = _number(r"ours ([0-9.]+) img/s", out)
  theirs = _number(r"tf\.data ([0-9.]+) img/s", out)
  assert _number(r"ratio ([0-9.]+)x", out) == pytest.approx(ours / theirs, abs=0.01)


def test_bench_input_compares_jpeg_files_with_their_tfrecords(tmp_path):
  data, records = str(tmp_path / "jpegs"), str(tmp_path / "records")
  _run("tools.bench_input", "--make_fake_data=%s" % data, "--num_images=16", "--num_classes=2")
  _run("tools.make_tfrecords", "--data_dir=%s" % data, "--output_dir=%s" % records, "--splits=train")
  out = _run("tools.bench_input", "--data_dir=%s" % data, "--records_dir=%s" % records, "--image_size=32",
             "--batch_size=4", "--workers=1", "--seconds=0.3", "--rounds=1", "--warmup_batches=1")
  row = [l for l in out.splitlines() if l.startswith("| 1 |")][0].strip("| ").split(" | ")
  files, records_rate = float(row[1]), float(row[4])
  assert float(row[2]) == files and float(row[7].rstrip("x")) == pytest.approx(records_rate / files, abs=0.01)
  on_records = _run("tools.bench_input", "--stages", "--data_dir=%s" % records, "--image_size=32")
  on_files = _run("tools.bench_input", "--stages", "--data_dir=%s" % data, "--image_size=32")
  assert "over 16 records" in on_records and "over 16 files" in on_files
  assert "read record, no data CRC" in on_records and "whole example, no data CRC" in on_records
  assert "no data CRC" not in on_files


def test_bench_listing_times_a_walk_its_cache_and_cached_indexes(tmp_path):
  tree, shards = str(tmp_path / "tree"), str(tmp_path / "shards")
  assert "wrote 60 files" in _run("tools.bench_listing", "--make_tree=%s" % tree, "--num_files=60", "--num_classes=6")
  assert "wrote 3 shards of 10 records" in _run("tools.bench_listing", "--make_shards=%s" % shards, "--num_shards=3",
                                                "--records_per_shard=10")
  out = _run("tools.bench_listing", "--data_dir=%s" % tree, "--records_dir=%s" % shards, "--workers=1",
             "--batch_size=4", "--image_size=16", "--extrapolate_to=120")
  row = [l for l in out.splitlines() if "walk (no cache), 60 files in 6 classes" in l][0].strip("| ").split(" | ")
  walk, per_file, at_120 = float(row[1][:-2]), float(row[2][:-3]), float(row[3][:-2])
  assert walk == pytest.approx(per_file * 60 / 1e6, abs=0.001) and at_120 == pytest.approx(2 * walk, abs=0.051)
  assert "from the cache (7 folders checked)" in out and "3 cached indexes" in out
  assert _number(r"record table in memory \(numpy arrays\) \| [0-9.]+ MB \| ([0-9]+) B", out) == 24


def test_bench_e2e_runs_the_trainer_and_the_compute_benchmark(tmp_path):
  out = _run("tools.bench_e2e", "--data_dir=%s" % (tmp_path / "jpegs"), "--num_images=24", "--model=tiny",
             "--image_size=16", "--batch_size=4", "--train_steps=8", "--iterations_per_loop=2", "--warmup_loops=1",
             "--workers=1", "--model_steps=2", "--out_dir=%s" % (tmp_path / "out"))
  compute = _number(r"compute only \(tools.bench_model\): +([0-9.]+) img/s", out)
  e2e = _number(r"end to end +\(launch.train\): +([0-9.]+) img/s", out)
  assert _number(r"gap \(input \+ loop overhead\): +(-?[0-9.]+) %",
                 out) == pytest.approx(100 * (1 - e2e / compute), abs=0.1)
  assert os.path.isfile(str(tmp_path / "out" / "model_dir" / "metrics.jsonl"))
  assert 0 <= _number(r"waiting for input workers: +([0-9.]+) % of the run", out) <= 100


def test_bench_e2e_times_a_recipe_file_and_its_first_loop(tmp_path):
  from tools import bench_input  # pylint: disable=g-import-not-at-top
  data = str(tmp_path / "jpegs")
  bench_input.make_fake_data(data, 24)
  recipe = tmp_path / "small.flags"
  recipe.write_text(
      "# a recipe as under configs/\n--model=tiny\n--image_size=16\n--patch_size=8\n--hidden_size=16\n"
      "--num_layers=1\n--num_heads=2\n--mlp_dim=32\n--stem=conv\n--train_batch_size=4\n--optimizer=adamw\n"
      "--iterations_per_loop=2\n--workers=1\n--augment=crop\n--num_epochs=300\n")
  out = _run("tools.bench_e2e", "--recipe=%s" % recipe, "--data_dir=%s" % data, "--train_steps=8", "--model_steps=2",
             "--matmul_size=128", "--out_dir=%s" % (tmp_path / "out"))
  compute = _number(r"compute only \(tools.bench_model\): +([0-9.]+) img/s, [0-9.]+ of a square matmul", out)
  seconds, steps, beyond = re.search(r"first loop: +([0-9.]+) s for (\d+) steps, (-?[0-9.]+) s of it beyond",
                                     out).groups()
  assert int(steps) == 2  # the recipe's iterations_per_loop reached the trainer
  records = metrics.read_jsonl(str(tmp_path / "out" / "model_dir" / metrics.METRICS_FILE))
  # --train_steps replaced the recipe's own length (--num_epochs) rather than conflicting with it.
  assert [r["step"] for r in records if r["event"] == "summary"] == [8]
  # The trainer's own start-up figure: the first loop beyond its steps at the later loops' median pace.
  first, *later = [r for r in records if r["event"] == "train"]
  assert float(seconds) == pytest.approx(first["seconds"], abs=0.06)
  pace = statistics.median(r["seconds"] / r["steps"] for r in later)
  assert float(beyond) == pytest.approx(first["seconds"] - 2 * pace, abs=0.06)
  assert compute > 0
  assert "op time by kind" in out and "small.flags on %s, 8 train steps" % data in out
  with open(str(tmp_path / "out" / "bench_model.log")) as f:
    assert "tiny conv-stem @16 batch 4 float32 adamw" in f.read()  # the recipe's stem reached bench_model too


@pytest.mark.parametrize("engine", DISTRIBUTED_ENGINES)
def test_bench_distributed_starts_its_ranks_and_reports_both(engine):
  # The command re-invokes itself with --worker for each rank: 1 rank alone, then 2 ranks of the engine (horovod's
  # through horovodrun, where the stack has it).
  out = _run("tools.bench_distributed", "--models=tiny", "--batch_sizes=2", "--image_size=16", "--iterations=1",
             "--repeats=1", "--allreduce_buckets=0,4", "--engines=" + engine, "--timeout=300")
  (row,) = [line for line in out.splitlines() if line.startswith("| tiny |")]
  cells = [c.strip() for c in row.strip("|").split("|")]
  one, two = float(cells[4]), float(cells[5])
  assert cells[2].endswith(" " + engine) and cells[3] == "2"
  # efficiency = t(1) / t(2), from the unrounded times: within what the 3-decimal rounding of both allows.
  low, high = 100 * (one - 5e-4) / (two + 5e-4), 100 * (one + 5e-4) / max(two - 5e-4, 1e-9)
  assert low - 0.5 <= float(cells[6].rstrip(" %")) <= high + 0.5
  assert len(cells[10].split(" / ")) == 2  # one all-reduce time per bucket size
  assert "timed: the trainer's loop" in out and "machine: " in out


def test_bench_soak_samples_the_trainer_and_its_workers_and_finds_nothing_left(tmp_path):
  # The digits run ends by itself long before --minutes; the table's rows are read back from the printed text.
  out = _run("tools.bench_soak", "--minutes=5", "--interval=0.5", "--warmup_minutes=0",
             "--out_dir=%s" % (tmp_path / "soak"), "--", "--model_dir=%s" % (tmp_path / "run"), "--train_steps=60",
             "--workers=1", "--iterations_per_loop=1")
  assert "trainer exit code 0" in out and "ended by itself" in out
  assert _number(r"last step (\d+)", out) == 60
  assert "worker processes left after exit: none" in out
  assert "/dev/shm entries left by the run: none" in out
  # The peak column: the input worker is a child of the trainer and was sampled once it had started.
  assert _number(r"\| workers \| [0-9.]+ \| [0-9.]+ \| ([0-9.]+) \|", out) >= 1
  assert _number(r"\| trainer RSS MB \| [0-9.]+ \| [0-9.]+ \| ([0-9.]+) \|", out) > 50
  with open(str(tmp_path / "soak" / "soak.jsonl")) as f:
    samples = [json.loads(line) for line in f]
  assert samples and all(s["trainer"]["fds"] > 0 for s in samples)


def test_bench_soak_fits_growth_per_hour_after_warmup():
  from tools import bench_soak
  assert bench_soak.slope_per_hour([(0.0, 10.0), (30.0, 15.0), (60.0, 20.0)]) == pytest.approx(10.0)
  samples = [{
      "minutes": m,
      "trainer": {
          "rss_mb": 100.0 + (50 if m < 1 else m),
          "pss_mb": 1.0,
          "fds": 9,
          "threads": 3
      },
      "workers": [],
      "shm_entries": 0
  } for m in (0.5, 2.0, 4.0)]
  rows = {row[0]: row for row in bench_soak.summary_rows(samples, warmup_minutes=1.0)}
  # The warm-up sample (150 MB at 0.5 min) is left out of both the first settled value and the fit.
  assert rows["trainer RSS MB"][1] == 102.0 and rows["trainer RSS MB"][4] == pytest.approx(60.0)
  assert rows["trainer RSS MB"][3] == 150.0 and rows["trainer fds"][4] == 0.0
