"""python -m tools.bench_e2e: end-to-end training img/s of launch.train against the model's compute alone.

1. Writes a tree of ImageNet-like JPEGs (tools.bench_input.make_fake_data) unless --data_dir already holds one.
2. Runs `python -m launch.train` on it (ViT-B/16 @224 by default, --mode=train, inception augmentation through the
   input package's worker processes) and reads the mean img/s after warm-up with tools.parse_log.
3. Runs `python -m tools.bench_model` with the same model, image size, batch, optimizer and dtype: compute only.
4. Prints both and the gap (1 - e2e / compute): the cost of the input pipeline plus the loop. Goal: under 10 %.
Both are run one after the other in fresh processes; on a busy machine rerun and compare the best.
  --model ViT-B/16 --image_size 224 --batch_size 8 --train_steps 12 --iterations_per_loop 4 --workers 1
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

from launch.flags import REDUCED_PRECISION_MODES
from tools import parse_log

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def main(argv=None):
  parser = argparse.ArgumentParser(prog="python -m tools.bench_e2e", description=__doc__.split("\n")[0])
  parser.add_argument("--data_dir", default=os.path.join(tempfile.gettempdir(), "vit_bench_jpegs"))
  parser.add_argument("--num_images", type=int, default=256)
  parser.add_argument("--model", default="ViT-B/16")
  parser.add_argument("--image_size", type=int, default=224)
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--train_steps", type=int, default=12)
  parser.add_argument("--iterations_per_loop", type=int, default=4)
  parser.add_argument("--warmup_loops", type=int, default=1)
  parser.add_argument("--workers", type=int, default=1, help="input worker processes of the trainer")
  parser.add_argument("--precision_mode", default="must_keep_origin_dtype")
  parser.add_argument("--model_steps", type=int, default=6, help="timed steps of tools.bench_model")
  parser.add_argument("--out_dir", default=os.path.join(tempfile.gettempdir(), "vit_bench_e2e"))
  args = parser.parse_args(argv)

  if not os.path.isdir(os.path.join(args.data_dir, "train")):
    from tools import bench_input  # pylint: disable=g-import-not-at-top
    bench_input.make_fake_data(args.data_dir, args.num_images)
  model_dir = os.path.join(args.out_dir, "model_dir")
  if os.path.isdir(model_dir):
    import shutil  # pylint: disable=g-import-not-at-top
    shutil.rmtree(model_dir)
  _run([
      "launch.train",
      "--data_dir=%s" % args.data_dir,
      "--model=%s" % args.model,
      "--image_size=%d" % args.image_size,
      "--train_batch_size=%d" % args.batch_size,
      "--train_steps=%d" % args.train_steps,
      "--iterations_per_loop=%d" % args.iterations_per_loop,
      "--warmup_loops=%d" % args.warmup_loops,
      "--workers=%d" % args.workers, "--mode=train", "--optimizer=momentum",
      "--precision_mode=%s" % args.precision_mode, "--augment=inception",
      "--model_dir=%s" % model_dir, "--save_every_loops=1000000", "--lr_warmup_steps=1"
  ])
  e2e = parse_log.summarize(model_dir)[-1]  # the trainer's own throughput definition (launch/metrics.py)

  dtype = "bfloat16" if args.precision_mode in REDUCED_PRECISION_MODES else "float32"
  out = _run([
      "tools.bench_model",
      "--model=%s" % args.model,
      "--image_size=%d" % args.image_size,
      "--batch_size=%d" % args.batch_size, "--optimizer=momentum",
      "--dtype=%s" % dtype,
      "--steps=%d" % args.model_steps, "--matmul_size=0", "--num_classes=10"
  ], os.path.join(args.out_dir, "bench_model.log"))
  match = re.search(r"([0-9.]+) img/s", out)
  compute = float(match.group(1)) if match else float("nan")
  gap = 1.0 - e2e["mean_ips"] / compute
  print("%s @%d batch %d %s, %d train steps (%d per loop, first loop + %d warm-up loops untimed), %d input worker(s)" %
        (args.model, args.image_size, args.batch_size, dtype, args.train_steps, args.iterations_per_loop,
         args.warmup_loops, args.workers))
  print("compute only (tools.bench_model): %8.2f img/s" % compute)
  print("end to end   (launch.train):      %8.2f img/s  (median %.2f)" % (e2e["mean_ips"], e2e["median_ips"]))
  print("gap (input + loop overhead):      %7.1f %%" % (100.0 * gap))


if __name__ == "__main__":
  main()
