"""Every recipe file under configs/ parses and trains a few steps, with its data and model size overridden."""
import glob
import json
import math
import os

import pytest

from launch import device
from tests.train_helpers import read_metrics, run_trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = sorted(glob.glob(os.path.join(ROOT, "configs", "*.flags")))
SMALL = [
    "--dataset=digits", "--model=tiny", "--hidden_size=16", "--num_layers=2", "--num_heads=2", "--mlp_dim=32",
    "--patch_size=4", "--image_size=8", "--train_batch_size=8", "--eval_batch_size=64", "--iterations_per_loop=1",
    "--workers=0", "--log_every_loops=1"
]


def _values(path):
  values = {}
  with open(path) as f:
    for line in f:
      line = line.strip()
      if line.startswith("--") and "=" in line:
        name, value = line[2:].split("=", 1)
        values[name] = value
  return values


def test_the_documented_recipes_are_all_there():
  names = {os.path.basename(p) for p in RECIPES}
  assert {
      "fashion_mnist.flags", "cifar10_scratch.flags", "deit_tiny_imagenet.flags", "deit_small_imagenet.flags",
      "deit_base_imagenet.flags", "finetune_cifar100_b16_384.flags"
  } <= names


@pytest.mark.parametrize("recipe", RECIPES, ids=os.path.basename)
def test_recipe_trains_a_few_steps_on_tiny_data(tmp_path, recipe):
  values = _values(recipe)
  assert values, "%s holds no flag" % recipe
  length = ["--train_steps=2"] if "train_steps" in values else ["--num_epochs=0.02"]
  model_dir = str(tmp_path / "run")  # after the recipe's own --model_dir, so it wins
  summary = run_trainer(model_dir, "--flagfile=%s" % recipe, *(SMALL + length + ["--model_dir=%s" % model_dir]),
                        tiny=False)
  assert summary["steps"] >= 1 and math.isfinite(summary["final_loss"])
  run = read_metrics(str(tmp_path / "run"), "run")[-1]
  flags = {l[2:].split("=", 1)[0] for l in run["flags"]} | {l[4:] for l in run["flags"] if l.startswith("--no")}
  for name, value in values.items():  # what the recipe sets reaches the run, unless the test overrode it
    if "--%s" % name not in " ".join(a.split("=")[0] for a in SMALL + length) and name != "model_dir":
      assert name in flags, "--%s of %s did not reach the run" % (name, os.path.basename(recipe))


def test_the_fashion_recipe_computes_in_bfloat16_exactly_where_the_cpu_rule_allows_it(tmp_path):
  # TF 1.15 and CPUs without native bf16: float32; TF 2.x with avx512_bf16/amx_bf16: bfloat16 (docs/benchmarks.md).
  recipe = [p for p in RECIPES if os.path.basename(p) == "fashion_mnist.flags"][0]
  model_dir = str(tmp_path / "run")
  run_trainer(model_dir, "--flagfile=%s" % recipe,
              *(SMALL + ["--num_epochs=0.02", "--model_dir=%s" % model_dir]), tiny=False)
  with open(os.path.join(model_dir, "plan.json")) as f:
    precision = json.load(f)["precision"]
  assert precision["mode"] == "allow_mix_precision"
  assert precision["compute_dtype"] == ("bfloat16" if device.cpu_has_bfloat16() else "float32")
