"""Times the peer a user would pick instead, PyTorch + timm, on the same training step as tools.bench_model.

  python tools/bench_peer.py --image_size 224 --batch_size 8 [--bf16] [--steps 8]
  python tools/bench_peer.py --fashion_dir /usr/share/datasets/fashion-mnist --epochs 3 [--augment flip|crop]

The second form trains end to end: the Fashion-MNIST recipe of issue 19 / configs/fashion_mnist.flags in timm, the
IDX files read into memory as tensors (what a PyTorch user does with MNIST-sized data), same model (patch 4, width
128, 6 blocks, 4 heads, MLP 256, class token), batch 128, AdamW lr 1e-3 wd 0.05 with biases, norms, position
embedding and class token spared, 1 warm-up epoch then cosine per step, label smoothing 0.1, clipping 1.0, the
test set evaluated after every epoch (batch 500); --augment flip mirrors half the images (the recipe's
--augment=none --hflip=true), crop adds 2-pixel zero padding + random crop to the flip, --random_erasing
timm's per-pixel erasing, --ema_decay timm's ModelEmaV3 (evaluated too), --bf16 the forward passes and the loss
under torch.autocast("cpu", torch.bfloat16) (the evaluation's too).
Prints one line per epoch (test top-1, train img/s) and the wall times.

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

SMALL = "fashion_small"
FASHION_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz")


class _Parser(argparse.ArgumentParser):
  """argparse with a bad command line as one line on stderr and exit code 2, as tools.command does."""

  def error(self, message):
    sys.stderr.write("error: %s\n" % message)
    sys.exit(2)


def main():
  parser = _Parser(description=__doc__.split("\n")[0])
  parser.add_argument(
      "--model", default="vit_base_patch16_224",
      help="timm model name (random init, 1000 classes), or %s: the Fashion-MNIST recipe's ViT (patch 4, "
      "width 128, depth 6, 4 heads, MLP 256, 10 classes; use --image_size 28)" % SMALL)
  parser.add_argument("--image_size", type=int, default=224, help="square input image side in pixels")
  parser.add_argument("--batch_size", type=int, default=None,
                      help="images per training step (default 8; 128 with --fashion_dir)")
  parser.add_argument("--steps", type=int, default=8, help="timed training steps")
  parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
  parser.add_argument("--bf16", action="store_true",
                      help="forward and loss under torch.autocast(\"cpu\", torch.bfloat16); else float32")
  parser.add_argument("--matmul_size", type=int, default=2048,
                      help="side of the square matmul timed after each step (in the step's dtype)")
  parser.add_argument("--fashion_dir", default=None,
                      help="folder of Fashion-MNIST's four IDX .gz files: train end to end instead of timing a step")
  parser.add_argument("--epochs", type=int, default=3, help="epochs of the end-to-end run")
  parser.add_argument("--augment", choices=("none", "flip", "crop"), default="none", metavar="MODE",
                      help="end to end: none, flip (horizontal, p 0.5), or crop (2-pixel pad + random crop + flip)")
  parser.add_argument("--random_erasing", type=float, default=0.0, help="end to end: timm's per-pixel erasing prob")
  parser.add_argument("--ema_decay", type=float, default=0.0, help="end to end: timm ModelEmaV3 decay (0: off)")
  parser.add_argument("--seed", type=int, default=0, help="torch seed of the end-to-end run")
  parser.add_argument(
      "--stem", choices=("patch", "conv"), default="patch",
      help="%s's stem: patch (timm's patch embedding) or conv (our --stem=conv: two 3x3 stride-2 "
      "convolutions, 64 and 128 channels, each with a channel layer norm and ReLU, then a 1x1 "
      "projection)" % SMALL)
  args = parser.parse_args()
  if args.batch_size is None:
    args.batch_size = 128 if args.fashion_dir else 8
  if args.fashion_dir:
    if args.epochs < 1 or not 0 <= args.random_erasing <= 1 or not 0 <= args.ema_decay < 1:
      parser.error("--epochs >= 1, --random_erasing in [0, 1] and --ema_decay in [0, 1) expected")
    import os  # pylint: disable=g-import-not-at-top
    missing = [n for n in FASHION_FILES if not os.path.isfile(os.path.join(args.fashion_dir, n))]
    if missing:
      parser.error("--fashion_dir %s lacks %s (Fashion-MNIST's IDX files: make fashion-data)" %
                   (args.fashion_dir, ", ".join(missing)))
    return fashion_end_to_end(args)
  import torch  # pylint: disable=g-import-not-at-top
  import timm  # pylint: disable=g-import-not-at-top

  torch.manual_seed(0)
  classes = 10 if args.model == SMALL else 1000
  net = small_vit(args.stem) if args.model == SMALL else timm.create_model(
      args.model, pretrained=False, num_classes=classes, img_size=args.image_size)
  net.train()
  optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
  images = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
  labels = torch.randint(0, classes, (args.batch_size,))
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


def small_vit(stem="patch"):
  """timm's ViT as the Fashion-MNIST recipe's model (configs/fashion_mnist.flags), random init; with stem "conv" its
  patch projection replaced by vit_raw's conv stem (TensorFlow's SAME padding: one zero row and column after)."""
  from timm.models.vision_transformer import VisionTransformer  # pylint: disable=g-import-not-at-top
  net = VisionTransformer(img_size=28, patch_size=4, in_chans=3, num_classes=10, embed_dim=128, depth=6, num_heads=4,
                          mlp_ratio=2.0)
  if stem == "conv":
    import torch  # pylint: disable=g-import-not-at-top
    from timm.layers import LayerNorm2d  # pylint: disable=g-import-not-at-top
    layers, channels = [], 3
    for width in (64, 128):
      layers += [
          torch.nn.ZeroPad2d((0, 1, 0, 1)),
          torch.nn.Conv2d(channels, width, 3, stride=2, bias=False),
          LayerNorm2d(width, eps=1e-6),
          torch.nn.ReLU()
      ]
      channels = width
    net.patch_embed.proj = torch.nn.Sequential(*layers, torch.nn.Conv2d(channels, 128, 1))
  return net


def read_idx(path, magic):
  """The array of one gzipped IDX file (uint8 data), its header checked."""
  import gzip  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  with gzip.open(path, "rb") as f:
    data = f.read()
  ndim = data[3]
  if int.from_bytes(data[:4], "big") != magic:
    raise SystemExit("error: %s: not an IDX file of magic %#x" % (path, magic))
  dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
  return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion_end_to_end(args):
  """Trains timm's ViT on Fashion-MNIST held in memory; prints per-epoch accuracy, img/s and the wall times."""
  import math  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  process_start = time.time()
  import torch  # pylint: disable=g-import-not-at-top
  import timm  # pylint: disable=g-import-not-at-top
  from timm.data.random_erasing import RandomErasing  # pylint: disable=g-import-not-at-top
  from timm.utils import ModelEmaV3  # pylint: disable=g-import-not-at-top

  def load(split):
    prefix = os.path.join(args.fashion_dir, split)
    images = torch.from_numpy(read_idx(prefix + "-images-idx3-ubyte.gz", 0x803).copy())
    labels = torch.from_numpy(read_idx(prefix + "-labels-idx1-ubyte.gz", 0x801).astype("int64"))
    return images, labels

  train_images, train_labels = load("train")
  test_images, test_labels = load("t10k")
  torch.manual_seed(args.seed)
  net = small_vit(args.stem)
  spared = [p for n, p in net.named_parameters() if p.ndim <= 1 or n in ("pos_embed", "cls_token")]
  decayed = [p for n, p in net.named_parameters() if not (p.ndim <= 1 or n in ("pos_embed", "cls_token"))]
  optimizer = torch.optim.AdamW([{
      "params": decayed,
      "weight_decay": 0.05
  }, {
      "params": spared,
      "weight_decay": 0.0
  }], lr=1e-3)
  steps_per_epoch = len(train_labels) // args.batch_size
  total, warmup = steps_per_epoch * args.epochs, steps_per_epoch
  schedule = torch.optim.lr_scheduler.LambdaLR(
      optimizer, lambda s: (s + 1) / warmup
      if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup))))
  ema = ModelEmaV3(net, decay=args.ema_decay) if args.ema_decay else None
  erase = RandomErasing(probability=args.random_erasing, mode="pixel", device="cpu") if args.random_erasing else None

  def batch_of(images):  # uint8 [B, 28, 28] -> float [B, 3, 28, 28] in [-1, 1], as our model_input scaling
    return (images.float() / 127.5 - 1.0).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()

  def augmented(images):
    padding = 2 if args.augment == "crop" else 0
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    shifts = torch.randint(0, 2 * padding + 1, (len(images), 2))
    flips = torch.rand(len(images)) < 0.5
    out = torch.empty_like(images)
    for i in range(len(images)):
      crop = padded[i, shifts[i, 0]:shifts[i, 0] + 28, shifts[i, 1]:shifts[i, 1] + 28]
      out[i] = crop.flip(-1) if flips[i] else crop
    return out

  def top1(model):
    model.eval()
    right = 0
    with torch.no_grad():
      for start in range(0, len(test_labels), 500):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
          logits = model(batch_of(test_images[start:start + 500]))
        right += int((logits.argmax(-1) == test_labels[start:start + 500]).sum())
    model.train()
    return right / float(len(test_labels))

  print("torch %s timm %s | Fashion-MNIST end to end: ViT patch 4 width 128 depth 6 @28, batch %d, %d epochs, "
        "augment %s, erasing %g, EMA %g, %s stem, %s, %d threads" %
        (torch.__version__, timm.__version__, args.batch_size, args.epochs, args.augment, args.random_erasing,
         args.ema_decay, args.stem, "bf16-autocast" if args.bf16 else "float32", torch.get_num_threads()))
  run_start = time.time()
  train_seconds = 0.0
  first_step = None
  for epoch in range(1, args.epochs + 1):
    order = torch.randperm(len(train_labels))
    epoch_start = time.time()
    for step in range(steps_per_epoch):
      index = order[step * args.batch_size:(step + 1) * args.batch_size]
      images = train_images[index]
      images = batch_of(augmented(images) if args.augment != "none" else images)
      if erase is not None:
        images = erase(images)
      optimizer.zero_grad(set_to_none=True)
      with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
        loss = torch.nn.functional.cross_entropy(net(images), train_labels[index], label_smoothing=0.1)
      loss.backward()
      torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
      optimizer.step()
      schedule.step()
      if ema is not None:
        ema.update(net)
      if first_step is None:
        first_step = time.time() - process_start
    seconds = time.time() - epoch_start
    train_seconds += seconds
    line = "epoch %d: test top-1 %.4f" % (epoch, top1(net))
    if ema is not None:
      line += " (EMA %.4f)" % top1(ema.module)
    print("%s, loss %.4f, train %.1f img/s, %.0f s since start" %
          (line, loss.item(), steps_per_epoch * args.batch_size / seconds, time.time() - run_start))
  print("wall %.1f s (process %.1f s, first step %.1f s after start), train img/s mean %.1f, incl. eval %.1f, peak "
        "RSS %.0f MB" % (time.time() - run_start, time.time() - process_start, first_step,
                         total * args.batch_size / train_seconds, total * args.batch_size /
                         (time.time() - run_start), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0))


if __name__ == "__main__":
  main()
