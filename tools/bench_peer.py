"""Times the peer a user would pick instead, PyTorch + timm, on the same training step as tools.bench_model.

  python tools/bench_peer.py --image_size 224 --batch_size 8 [--bf16] [--steps 8]

Run it with a Python that has torch and timm (a throwaway venv outside the project: the project does not depend on
them; the tests run only its command line). Same step as ours: timm's ViT-B/16 (random init, 1000 classes), cross
entropy, backward, global-norm clipping to 1.0, Adam; --bf16 runs forward and loss under torch.autocast("cpu",
torch.bfloat16). Prints the median and best img/s of the timed steps, a square matmul's GFLOP/s timed after each
step, and the peak RSS.

The one command of tools/ on argparse, not absl + tools.command: it runs as a script (not `-m tools...`) under that
other Python, which has neither absl (timm and torch do not depend on it) nor this project on its path. Its flags
are named as tools.bench_model's where they mean the same, and a bad value is still one line and exit code 2.
"""
import argparse
import resource
import sys
import time


class _Parser(argparse.ArgumentParser):
  """argparse with a bad command line as one line on stderr and exit code 2, as tools.command does."""

  def error(self, message):
    sys.stderr.write("error: %s\n" % message)
    sys.exit(2)


def main():
  parser = _Parser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default="vit_base_patch16_224", help="timm model name (random init, 1000 classes)")
  parser.add_argument("--image_size", type=int, default=224, help="square input image side in pixels")
  parser.add_argument("--batch_size", type=int, default=8, help="images per training step")
  parser.add_argument("--steps", type=int, default=8, help="timed training steps")
  parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
  parser.add_argument("--bf16", action="store_true",
                      help="forward and loss under torch.autocast(\"cpu\", torch.bfloat16); else float32")
  parser.add_argument("--matmul_size", type=int, default=2048,
                      help="side of the square matmul timed after each step (in the step's dtype)")
  args = parser.parse_args()
  import torch  # pylint: disable=g-import-not-at-top
  import timm  # pylint: disable=g-import-not-at-top

  torch.manual_seed(0)
  net = timm.create_model(args.model, pretrained=False, num_classes=1000, img_size=args.image_size)
  net.train()
  optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
  images = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
  labels = torch.randint(0, 1000, (args.batch_size,))
  matmul_dtype = torch.bfloat16 if args.bf16 else torch.float32
  a = torch.randn(args.matmul_size, args.matmul_size).to(matmul_dtype)
  b = torch.randn(args.matmul_size, args.matmul_size).to(matmul_dtype)

  def step():
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
      loss = torch.nn.functional.cross_entropy(net(images), labels)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    optimizer.step()

  def matmul_gflops():
    best = None
    for _ in range(3):
      start = time.time()
      torch.matmul(a, b)
      elapsed = time.time() - start
      best = elapsed if best is None else min(best, elapsed)
    return 2.0 * args.matmul_size**3 / best / 1e9

  for _ in range(args.warmup):
    step()
  times, peaks = [], []
  for _ in range(args.steps):
    start = time.time()
    step()
    times.append(time.time() - start)
    peaks.append(matmul_gflops())
  times.sort()
  peaks.sort()
  median = times[len(times) // 2] if len(times) % 2 else 0.5 * (times[len(times) // 2 - 1] + times[len(times) // 2])
  print("torch %s timm %s | %s @%d batch %d %s adam: %.3f s/step median (best %.3f), %.2f img/s (best %.2f), "
        "%d^2 matmul %.1f GFLOP/s, %d threads, peak RSS %.0f MB" %
        (torch.__version__, timm.__version__, args.model, args.image_size, args.batch_size, "bf16-autocast" if args.bf16
         else "float32", median, times[0], args.batch_size / median, args.batch_size / times[0], args.matmul_size,
         peaks[len(peaks) // 2], torch.get_num_threads(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0))


if __name__ == "__main__":
  main()
