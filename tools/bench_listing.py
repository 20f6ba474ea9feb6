"""What opening a dataset costs at ImageNet scale: listing an ImageFolder of many tiny files, its file table's
memory, the listing cache, and opening 1,024 TFRecord shards with their indexes; each to the first batch.

  python -m tools.bench_listing --make_tree /tmp/big --num_files 1281167 --num_classes 1000
  python -m tools.bench_listing --make_shards /tmp/big_records --num_shards 1024 --records_per_shard 1251
  python -m tools.bench_listing --data_dir /tmp/big --records_dir /tmp/big_records

Every file is the same 629-byte JPEG (8x8): decoding costs nothing, so what is timed is the listing, the checks
and the pipeline start. The ImageFolder is opened through input.datasets.open_dataset, the trainer's path (class
folders, walk, probe of 16 files), three times: walking with no cache, walking and writing the cache, and reading
the cache; then an InputPipeline starts --workers forked workers and makes the first batch. Memory: tracemalloc of
one more walk (the Python objects of the file table), and the pages a forked worker copies when it touches every
path once, as a worker does over an epoch (with a list of str, each read writes a reference count into its
string's page; the file table is a dataset_base.PathTable so that it does not). Times are
warm: the tree was just written (or listed), so the kernel has its folders cached; a cold walk on a disk or NFS
adds the reads of every folder. The rows scale to --extrapolate_to files linearly (the walk is linear in files).
"""
import gc
import logging
import os
import shutil
import tempfile
import time
import tracemalloc

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

from input import datasets  # noqa: E402
from input import image_folder  # noqa: E402
from input import listing_cache  # noqa: E402
from input import tfrecord_format  # noqa: E402
from input import tfrecord_index  # noqa: E402
from input.pipeline import InputPipeline  # noqa: E402
from tools import bench_common  # noqa: E402
from tools import command  # noqa: E402
from tools.command import UsageError  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string("make_tree", None, "Write an ImageFolder of --num_files tiny JPEGs under DIR/train and exit.")
  flags.DEFINE_integer("num_files", 1281167, "--make_tree: files (ImageNet's training set: 1,281,167).")
  flags.DEFINE_integer("num_classes", 1000, "--make_tree: class folders.")
  flags.DEFINE_string("make_shards", None, "Write --num_shards official-layout TFRecord shards to DIR and exit.")
  flags.DEFINE_integer("num_shards", 1024, "--make_shards: shards (ImageNet's train split: 1,024).")
  flags.DEFINE_integer("records_per_shard", 1251, "--make_shards: records per shard.")
  flags.DEFINE_string("data_dir", None, "The ImageFolder to measure (written by --make_tree).")
  flags.DEFINE_string("records_dir", None, "The TFRecord shards to measure (written by --make_shards).")
  flags.DEFINE_integer("workers", 2, "Worker processes of the first-batch pipeline.")
  flags.DEFINE_integer("batch_size", 128, "Batch of the first-batch pipeline.")
  flags.DEFINE_integer("image_size", 224, "Output side of the first-batch pipeline.")
  flags.DEFINE_integer("extrapolate_to", 1281167, "Files the per-file numbers are scaled to.")


def tiny_jpeg():
  ok, data = cv2.imencode(".jpg", np.full((8, 8, 3), 128, np.uint8))
  assert ok
  return data.tobytes()


def make_tree(root, num_files, num_classes):
  data = tiny_jpeg()
  start = time.time()
  for c in range(num_classes):
    folder = os.path.join(root, "train", "n%08d" % c)
    os.makedirs(folder, exist_ok=True)
    for i in range(c, num_files, num_classes):
      with open(os.path.join(folder, "n%08d_%d.JPEG" % (c, i)), "wb") as f:
        f.write(data)
  print("wrote %d files of %d bytes in %d class folders under %s in %.1f s" %
        (num_files, len(data), num_classes, os.path.join(root, "train"), time.time() - start))


def make_shards(root, num_shards, records_per_shard):
  data = tiny_jpeg()
  os.makedirs(root, exist_ok=True)
  start = time.time()
  for k in range(num_shards):
    records = []
    for n in range(records_per_shard):
      label = 1 + (k * records_per_shard + n) % 1000
      records.append(
          tfrecord_format.frame(
              tfrecord_format.encode_example({
                  "image/encoded": data,
                  "image/class/label": label,
                  "image/class/synset": "n%08d" % label
              })))
    with open(os.path.join(root, "train-%05d-of-%05d" % (k, num_shards)), "wb") as f:
      f.write(b"".join(records))
  print("wrote %d shards of %d records under %s in %.1f s" % (num_shards, records_per_shard, root, time.time() - start))


def _timed(fn):
  start = time.time()
  value = fn()
  return value, time.time() - start


def _first_batch(dataset, args):
  start = time.time()
  with InputPipeline(dataset, args.image_size, args.batch_size, True, workers=args.workers, seed=0) as pipe:
    next(pipe.batches())
  return time.time() - start


def _private_dirty_kb():
  with open("/proc/self/smaps_rollup") as f:
    for line in f:
      if line.startswith("Private_Dirty:"):
        return int(line.split()[1])
  return 0


def _worker_copy_mb(paths):
  """MB of private pages a forked child gains by touching every path once (what a worker does in an epoch)."""
  read, write = os.pipe()
  pid = os.fork()
  if pid == 0:
    os.close(read)
    before = _private_dirty_kb()
    total = 0
    for p in paths:
      total += len(p)
    os.write(write, str(_private_dirty_kb() - before).encode())
    os._exit(0)
  os.close(write)
  grown = int(os.read(read, 64) or b"0")
  os.close(read)
  os.waitpid(pid, 0)
  return grown / 1024.0


def _table():
  table = bench_common.Table([("what", "%s"), ("measured", "%s"), ("per file", "%s"),
                              ("at %s files" % "{:,}".format(FLAGS.extrapolate_to), "%s")])
  table.header()
  return table


def measure_folder(args, table):
  root = args.data_dir
  cache = tempfile.mkdtemp(prefix="bench_listing_cache.")
  scale = args.extrapolate_to
  try:
    saved_min = image_folder.MIN_CACHED_FILES
    image_folder.MIN_CACHED_FILES = 1 << 62  # no cache: the plain walk
    dataset, walk = _timed(lambda: datasets.open_dataset("imagefolder", root, "train", cache_dir=cache))
    n = len(dataset)
    image_folder.MIN_CACHED_FILES = 0  # cached whatever its size: a small tree measures the same code
    classes = dataset.num_classes

    def row(what, seconds):
      table.row(what, "%.3f s" % seconds, "%.2f us" % (seconds / n * 1e6), "%.1f s" % (seconds / n * scale))

    row("open_dataset, walk (no cache), %d files in %d classes" % (n, classes), walk)
    del dataset
    gc.collect()
    _, write = _timed(lambda: datasets.open_dataset("imagefolder", root, "train", cache_dir=cache))
    size = os.path.getsize(listing_cache.cache_path(os.path.join(os.path.abspath(root), "train"), cache))
    row("open_dataset, walk + write the cache (%.1f MB file)" % (size / 1e6), write)
    dataset, cached = _timed(lambda: datasets.open_dataset("imagefolder", root, "train", cache_dir=cache))
    row("open_dataset from the cache (%d folders checked)" % (classes + 1), cached)
    first = _first_batch(dataset, args)
    table.row(
        "first batch after opening (%d workers, batch %d at %d px)" % (args.workers, args.batch_size, args.image_size),
        "%.2f s" % first, "", "%.2f s (does not grow)" % first)
    table.row("seconds to first batch: walk / cache", "%.2f / %.2f s" % (walk + first, cached + first), "",
              "%.1f / %.1f s" % (walk / n * scale + first, cached / n * scale + first))
    copy = _worker_copy_mb(dataset.paths)
    del dataset
    gc.collect()
    image_folder.MIN_CACHED_FILES = 1 << 62
    tracemalloc.start()
    dataset = image_folder.load_image_folder(os.path.join(root, "train"), "train", cache_dir=cache)
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    image_folder.MIN_CACHED_FILES = saved_min
    table.row("file table in memory (paths + labels, tracemalloc)", "%.1f MB" % (held / 1e6), "%.0f B" % (held / n),
              "%.0f MB" % (held / n * scale / 1e6))
    table.row("pages a forked worker copies touching every path", "%.1f MB" % copy, "%.0f B" % (copy * 1048576 / n),
              "%.0f MB per worker" % (copy * 1048576 / n * scale / 1e6))
  finally:
    shutil.rmtree(cache, ignore_errors=True)


def measure_records(args, table):
  root = args.records_dir
  cache = tempfile.mkdtemp(prefix="bench_listing_cache.")
  try:
    for name in os.listdir(root):  # indexes from an earlier run would hide the build
      if name.endswith(tfrecord_index.INDEX_SUFFIX):
        os.remove(os.path.join(root, name))
    dataset, build = _timed(lambda: datasets.open_dataset("tfrecord", root, "train", cache_dir=cache))
    n, shards = len(dataset), len(dataset.shards)
    scale = args.extrapolate_to

    def row(what, seconds):
      table.row(what, "%.3f s" % seconds, "%.2f us" % (seconds / n * 1e6), "%.1f s" % (seconds / n * scale))

    row("open_dataset tfrecord, building %d indexes (%d records)" % (shards, n), build)
    del dataset
    gc.collect()
    dataset, loaded = _timed(lambda: datasets.open_dataset("tfrecord", root, "train", cache_dir=cache))
    table.row("open_dataset tfrecord, %d cached indexes" % shards, "%.2f s" % loaded,
              "%.1f ms per index" % (loaded / shards * 1e3), "%.2f s (1,024 shards)" % (loaded / shards * 1024))
    first = _first_batch(dataset, args)
    table.row("first batch after opening (%d workers)" % args.workers, "%.2f s" % first, "",
              "%.2f s (does not grow)" % first)
    held = sum(getattr(dataset, k).nbytes for k in ("labels", "shard_ids", "offsets", "lengths"))
    table.row("record table in memory (numpy arrays)", "%.1f MB" % (held / 1e6), "%.0f B" % (held / n),
              "%.0f MB" % (held / n * scale / 1e6))
  finally:
    shutil.rmtree(cache, ignore_errors=True)


def run(argv):
  if len(argv) > 1:
    raise UsageError("unexpected arguments %s" % " ".join(argv[1:]))
  if FLAGS.make_tree:
    make_tree(FLAGS.make_tree, FLAGS.num_files, FLAGS.num_classes)
    return
  if FLAGS.make_shards:
    make_shards(FLAGS.make_shards, FLAGS.num_shards, FLAGS.records_per_shard)
    return
  if not FLAGS.data_dir and not FLAGS.records_dir:
    raise UsageError("give --data_dir and/or --records_dir (or --make_tree / --make_shards DIR)")
  # The walk of a tree written moments ago must still be cacheable: its folders are older than the settle time
  # once this sleep is over.
  time.sleep(listing_cache.SETTLE_SECONDS)
  logging.getLogger("input").setLevel(logging.WARNING)
  table = _table()
  try:
    if FLAGS.data_dir:
      measure_folder(FLAGS, table)
    if FLAGS.records_dir:
      measure_records(FLAGS, table)
  except ValueError as e:
    raise UsageError(str(e))
  print(bench_common.machine_line(("OpenCV", cv2.__version__)))
  print("times are warm (the folders are in the kernel's cache); the machine may be shared: see its load")


if __name__ == "__main__":
  define_flags()
  command.run_command(run)
