"""python -m tools.bench_e2e: end-to-end training img/s of launch.train against the model's compute alone.

1. Writes a tree of ImageNet-like JPEGs (tools.bench_input.make_fake_data) unless --data_dir already holds one.
2. Runs `python -m launch.train` on it (ViT-B/16 @224 by default, --mode=train, inception augmentation through the
   input package's worker processes) and reads the mean img/s after warm-up with tools.parse_log.
3. Runs `python -m tools.bench_model` with the same model, image size, batch, optimizer and dtype: compute only.
4. Prints both and the gap (1 - e2e / compute): the cost of the input pipeline plus the loop. Goal: under 10 %.
   And the trainer's input_wait (its summary): the fraction of the run the batch generator waited for the input
   workers, the part of the gap that is data (the rest is the loop, and the workers' share of the
   cores slowing the step).
With --recipe a flags file (configs/*.flags) is the trainer's run instead, on --data_dir, for --train_steps steps
(--mode=train, no checkpoints), and bench_model times that recipe's model, image size, batch and optimizer; the
first loop's cost beyond its steps (the trainer's startup_s: graph build, optimisation, input start) and
bench_model's op-time breakdown and ratio to a square matmul are printed too.
Both are run one after the other in fresh processes; on a busy machine rerun and compare the best.

  python -m tools.bench_e2e [--model ViT-B/16] [--image_size 224] [--batch_size 8] [--train_steps 12]
      [--iterations_per_loop 4] [--workers 1]
  python -m tools.bench_e2e --recipe configs/fashion_mnist.flags --data_dir /usr/share/datasets/fashion-mnist
      --train_steps 300
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

from absl import flags

from launch import metrics
from launch.flags import PRECISION_MODES
from launch.flags import REDUCED_PRECISION_MODES
from tools import bench_common
from tools import command
from tools import parse_log
from tools.command import UsageError
from vit_raw import configs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS


def define_flags():
  """The command's flags (defined only when it runs as a command: importing it leaves absl's flags alone)."""
  flags.DEFINE_string("data_dir", os.path.join(tempfile.gettempdir(), "vit_bench_jpegs"),
                      "ImageFolder tree to train on; written (--num_images generated JPEGs) when it has no train/.")
  flags.DEFINE_integer("num_images", 256, "JPEGs to generate when --data_dir has no train/ folder yet.")
  flags.DEFINE_string("model", "ViT-B/16", "Model variant of both runs, e.g. ViT-B/16, ViT-Ti/16, tiny.")
  flags.DEFINE_integer("image_size", 224, "Square input image side in pixels of both runs.")
  flags.DEFINE_integer("batch_size", 8, "Images per training step of both runs (the trainer's --train_batch_size).")
  flags.DEFINE_integer("train_steps", 12, "Training steps of the launch.train run.")
  flags.DEFINE_integer("iterations_per_loop", 4, "Steps per sess.run (in-graph loop) of the launch.train run.")
  flags.DEFINE_integer("warmup_loops", 1, "Loops of the launch.train run after its first that are not timed.")
  flags.DEFINE_integer("workers", 1, "Input worker processes of the trainer (0: decode in the trainer's process).")
  flags.DEFINE_enum(
      "precision_mode", "must_keep_origin_dtype", list(PRECISION_MODES), "The trainer's --precision_mode; "
      "tools.bench_model runs in bfloat16 for the reduced-precision modes, else in float32.")
  flags.DEFINE_integer("model_steps", 6, "Timed steps of tools.bench_model.")
  flags.DEFINE_string(
      "recipe", "", "A flags file of launch.train (e.g. configs/fashion_mnist.flags) to run on --data_dir for "
      "--train_steps steps instead of the flags above; bench_model then times its model, size, batch, optimizer.")
  flags.DEFINE_integer("matmul_size", 2048, "Side of bench_model's reference square matmul (0: none).")
  flags.DEFINE_string("out_dir", os.path.join(tempfile.gettempdir(), "vit_bench_e2e"),
                      "Folder of the trainer's run (model_dir/, replaced on every run) and of bench_model.log.")


def _run(args, log_path=None):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run([sys.executable, "-m"] + args, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True)
  if log_path:
    with open(log_path, "w") as f:
      f.write(result.stdout)
  if result.returncode != 0:
    sys.stderr.write(result.stdout[-3000:])
    raise SystemExit("bench_e2e: %s failed (exit %d)" % (" ".join(args[:1]), result.returncode))
  return result.stdout


def run(argv):
  if len(argv) > 1:
    raise UsageError("unexpected arguments %s" % " ".join(argv[1:]))
  for name, low in (("num_images", 1), ("image_size", 1), ("batch_size", 1), ("train_steps", 1),
                    ("iterations_per_loop", 1), ("warmup_loops", 0), ("workers", 0), ("model_steps", 1)):
    if FLAGS[name].value < low:
      raise UsageError("--%s=%d: must be at least %d" % (name, FLAGS[name].value, low))
  model_dir = os.path.join(FLAGS.out_dir, "model_dir")
  if FLAGS.recipe:
    trainer_args, model_args, what = _recipe_runs(model_dir)
  else:
    trainer_args, model_args, what = _default_runs(model_dir)
  if os.path.isdir(model_dir):
    shutil.rmtree(model_dir)
  _run(trainer_args)
  e2e = parse_log.summarize(model_dir)[-1]  # the trainer's own throughput definition (launch/metrics.py)
  records = metrics.read_jsonl(os.path.join(model_dir, metrics.METRICS_FILE))
  summary = ([r for r in records if r["event"] == "summary"] or [{}])[-1]
  first = ([r for r in records if r["event"] == "train"] or [None])[0]

  out = _run([
      "tools.bench_model",
      "--steps=%d" % FLAGS.model_steps,
      "--matmul_size=%d" % FLAGS.matmul_size, "--num_classes=10"
  ] + model_args, os.path.join(FLAGS.out_dir, "bench_model.log"))
  match = re.search(r"([0-9.]+) img/s", out)
  compute = float(match.group(1)) if match else float("nan")
  gap = 1.0 - e2e["mean_ips"] / compute
  print(bench_common.timed_line(what))
  version = re.search(r"TF (\S+) \|", out)  # bench_model's line starts with its TensorFlow version
  print(bench_common.machine_line(("TensorFlow", version.group(1) if version else "?")))
  ratio = re.search(r"matmul ([0-9.]+) GFLOP/s \(interleaved\), ratio ([0-9.]+)", out)
  print("compute only (tools.bench_model): %8.2f img/s%s" % (compute, ", %s of a square matmul (%s GFLOP/s)" %
                                                             (ratio.group(2), ratio.group(1)) if ratio else ""))
  print("end to end   (launch.train):      %8.2f img/s  (median %.2f)" % (e2e["mean_ips"], e2e["median_ips"]))
  print("gap (input + loop overhead):      %7.1f %%" % (100.0 * gap))
  if "input_wait" in summary:
    print("waiting for input workers:        %7.1f %% of the run" % (100.0 * summary["input_wait"]))
  if first is not None and "startup_s" in summary:
    print("first loop:                       %7.1f s for %d steps, %.1f s of it beyond them at the later loops' "
          "median pace (graph build, optimisation, input start)" %
          (first["seconds"], first["steps"], summary["startup_s"]))
  for line in out.splitlines():
    if line.startswith("op time by kind"):
      print(line)


def _recipe_runs(model_dir):
  """(trainer args, bench_model args, description) of --recipe."""
  from launch import run_record  # pylint: disable=g-import-not-at-top
  try:
    with open(FLAGS.recipe) as f:
      lines = f.read().splitlines()
    recipe = run_record.parse_flag_lines(lines, FLAGS.recipe)
  except (OSError, ValueError) as e:
    raise UsageError("--recipe %s: %s" % (FLAGS.recipe, e))
  # The recipe's own length (--num_epochs or --train_steps) gives way to --train_steps: launch.train refuses both.
  os.makedirs(FLAGS.out_dir, exist_ok=True)
  shortened = os.path.join(FLAGS.out_dir, os.path.basename(FLAGS.recipe))
  with open(shortened, "w") as f:
    f.writelines(l + "\n" for l in lines if not l.strip().startswith(("--num_epochs", "--train_steps")))
  trainer = [
      "launch.train",
      "--flagfile=%s" % shortened,
      "--data_dir=%s" % FLAGS.data_dir,
      "--train_steps=%d" % FLAGS.train_steps, "--mode=train",
      "--model_dir=%s" % model_dir, "--save_every_loops=1000000",
      "--warmup_loops=%d" % FLAGS.warmup_loops
  ]
  dtype = "bfloat16" if recipe.get("precision_mode") in REDUCED_PRECISION_MODES else "float32"
  optimizer = recipe.get("optimizer", "momentum")
  model = [
      "--model=%s" % recipe.get("model", "ViT-B/16"),
      "--image_size=%s" % recipe.get("image_size", "224"),
      "--batch_size=%s" % recipe.get("train_batch_size", "8"),
      "--optimizer=%s" % (optimizer if optimizer in ("adam", "adamw", "sgd", "momentum") else "momentum"),
      "--dtype=%s" % dtype
  ]
  model += ["--%s=%s" % (k, recipe[k]) for k in configs.CONFIG_FIELDS if k in recipe]
  what = "%s on %s, %d train steps (first loop + %d warm-up loops untimed), %s" % (
      FLAGS.recipe, FLAGS.data_dir, FLAGS.train_steps, FLAGS.warmup_loops, dtype)
  return trainer, model, what


def _default_runs(model_dir):
  """(trainer args, bench_model args, description) of the model flags, on generated JPEGs."""
  if not os.path.isdir(os.path.join(FLAGS.data_dir, "train")):
    from tools import bench_input  # pylint: disable=g-import-not-at-top
    bench_input.make_fake_data(FLAGS.data_dir, FLAGS.num_images)
  dtype = "bfloat16" if FLAGS.precision_mode in REDUCED_PRECISION_MODES else "float32"
  trainer = [
      "launch.train",
      "--data_dir=%s" % FLAGS.data_dir,
      "--model=%s" % FLAGS.model,
      "--image_size=%d" % FLAGS.image_size,
      "--train_batch_size=%d" % FLAGS.batch_size,
      "--train_steps=%d" % FLAGS.train_steps,
      "--iterations_per_loop=%d" % FLAGS.iterations_per_loop,
      "--warmup_loops=%d" % FLAGS.warmup_loops,
      "--workers=%d" % FLAGS.workers, "--mode=train", "--optimizer=momentum",
      "--precision_mode=%s" % FLAGS.precision_mode, "--augment=inception",
      "--model_dir=%s" % model_dir, "--save_every_loops=1000000", "--lr_warmup_steps=1"
  ]
  model = [
      "--model=%s" % FLAGS.model,
      "--image_size=%d" % FLAGS.image_size,
      "--batch_size=%d" % FLAGS.batch_size, "--optimizer=momentum",
      "--dtype=%s" % dtype
  ]
  what = "%s @%d batch %d %s, %d train steps (%d per loop, first loop + %d warm-up loops untimed), %d input " \
         "worker(s)" % (FLAGS.model, FLAGS.image_size, FLAGS.batch_size, dtype, FLAGS.train_steps,
                        FLAGS.iterations_per_loop, FLAGS.warmup_loops, FLAGS.workers)
  return trainer, model, what


if __name__ == "__main__":
  define_flags()
  command.run_command(run)
