"""python -m tools.bench_e2e: end-to-end training img/s of launch.train against the model's compute alone.

1. Writes a tree of ImageNet-like JPEGs (tools.bench_input.make_fake_data) unless --data_dir already holds one.
2. Runs `python -m launch.train` on it (ViT-B/16 @224 by default, --mode=train, inception augmentation through the
   input package's worker processes) and reads the mean img/s after warm-up with tools.parse_log.
3. Runs `python -m tools.bench_model` with the same model, image size, batch, optimizer and dtype: compute only.
4. Prints both and the gap (1 - e2e / compute): the cost of the input pipeline plus the loop. Goal: under 10 %.
   And the trainer's input_wait (its summary): the fraction of the run the batch generator waited for the input
   workers, the part of the gap that is data (the rest is the loop, and the workers' share of the
   cores slowing the step).
Both are run one after the other in fresh processes; on a busy machine rerun and compare the best.

  python -m tools.bench_e2e [--model ViT-B/16] [--image_size 224] [--batch_size 8] [--train_steps 12]
      [--iterations_per_loop 4] [--workers 1]
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
  if not os.path.isdir(os.path.join(FLAGS.data_dir, "train")):
    from tools import bench_input  # pylint: disable=g-import-not-at-top
    bench_input.make_fake_data(FLAGS.data_dir, FLAGS.num_images)
  model_dir = os.path.join(FLAGS.out_dir, "model_dir")
  if os.path.isdir(model_dir):
    shutil.rmtree(model_dir)
  _run([
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
  ])
  e2e = parse_log.summarize(model_dir)[-1]  # the trainer's own throughput definition (launch/metrics.py)
  summary = [r for r in metrics.read_jsonl(os.path.join(model_dir, metrics.METRICS_FILE)) if r["event"] == "summary"]
  input_wait = summary[-1].get("input_wait") if summary else None

  dtype = "bfloat16" if FLAGS.precision_mode in REDUCED_PRECISION_MODES else "float32"
  out = _run([
      "tools.bench_model",
      "--model=%s" % FLAGS.model,
      "--image_size=%d" % FLAGS.image_size,
      "--batch_size=%d" % FLAGS.batch_size, "--optimizer=momentum",
      "--dtype=%s" % dtype,
      "--steps=%d" % FLAGS.model_steps, "--matmul_size=0", "--num_classes=10"
  ], os.path.join(FLAGS.out_dir, "bench_model.log"))
  match = re.search(r"([0-9.]+) img/s", out)
  compute = float(match.group(1)) if match else float("nan")
  gap = 1.0 - e2e["mean_ips"] / compute
  print(
      bench_common.timed_line(
          "%s @%d batch %d %s, %d train steps (%d per loop, first loop + %d warm-up loops untimed), "
          "%d input worker(s)" % (FLAGS.model, FLAGS.image_size, FLAGS.batch_size, dtype, FLAGS.train_steps,
                                  FLAGS.iterations_per_loop, FLAGS.warmup_loops, FLAGS.workers)))
  version = re.search(r"TF (\S+) \|", out)  # bench_model's line starts with its TensorFlow version
  print(bench_common.machine_line(("TensorFlow", version.group(1) if version else "?")))
  print("compute only (tools.bench_model): %8.2f img/s" % compute)
  print("end to end   (launch.train):      %8.2f img/s  (median %.2f)" % (e2e["mean_ips"], e2e["median_ips"]))
  print("gap (input + loop overhead):      %7.1f %%" % (100.0 * gap))
  if input_wait is not None:
    print("waiting for input workers:        %7.1f %% of the run" % (100.0 * input_wait))


if __name__ == "__main__":
  define_flags()
  command.run_command(run)
