"""Input throughput: our multiprocess OpenCV pipeline vs a tf.data pipeline doing the same work, same core count.

  python -m tools.bench_input --make_fake_data /tmp/fake_imagenet --num_images 1000
  python -m tools.bench_input --data_dir /tmp/fake_imagenet --image_size 224 --workers 1,2
  python -m tools.bench_input --data_dir /tmp/fake_imagenet --records_dir /tmp/fake_records --workers 1,2

For every N in --workers: our pipeline with N worker processes read through tf_dataset() in a tf.Session, then a
tf.data pipeline (tf.io.read_file, tf.image.decode_jpeg, sample_distorted_bounding_box with the same area/aspect
ranges, bilinear resize, random flip, batch) with num_parallel_calls=N and its thread pools limited to N; both sessions
use intra/inter-op threads = N. The first --warmup_batches batches are never timed; each pipeline is built, timed and
torn down --rounds times in ABBA order, so that load from other jobs hits both alike. Prints img/s (wall), img per
CPU-second (this process plus our workers: the per-core efficiency, robust to a busy machine) and the ratios.

With --records_dir (the same images as TFRecord shards, tools.make_tfrecords): our pipeline on the JPEG files
against our pipeline on the shards, same rounds and order, img/s and img/s per worker.
"""
import copy
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402

from input import augment  # noqa: E402
from input.datasets import open_dataset  # noqa: E402
from input.pipeline import InputPipeline  # noqa: E402
from tools import bench_common  # noqa: E402
from tools import command  # noqa: E402
from tools.command import UsageError  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
  """The command's flags; defined only when it runs as a command, so that importing make_fake_data
  (tools.bench_e2e) leaves the process's absl flags alone."""
  flags.DEFINE_string(
      "make_fake_data", None, "Write an ImageNet-like tree of --num_images JPEGs (500x375, "
      "--num_classes classes) into this folder and exit.")
  flags.DEFINE_integer("num_images", 1000, "--make_fake_data: how many JPEGs to write.")
  flags.DEFINE_integer("num_classes", 10, "--make_fake_data: how many class folders to spread them over.")
  flags.DEFINE_string("data_dir", None, "ImageFolder tree or list file to read (its train split).")
  flags.DEFINE_integer("image_size", 224, "Square output image side in pixels of both pipelines.")
  flags.DEFINE_integer("batch_size", 64, "Images per batch of both pipelines.")
  flags.DEFINE_list("workers", ["1"], "Worker process / core counts N to time, comma-separated, e.g. 1,2.")
  flags.DEFINE_float("seconds", 20.0, "Timed seconds per pipeline and N, split over the --rounds.")
  flags.DEFINE_integer("rounds", 2, "Timed rounds per pipeline and N, in ABBA order.")
  flags.DEFINE_integer("warmup_batches", 5, "Untimed batches at the start of every round.")
  flags.DEFINE_bool(
      "stages", False, "Instead: the CPU cost per example of each stage of our per-example work "
      "(and of tf decode_jpeg), in this process; TFRecords also without the data CRC.")
  flags.DEFINE_string(
      "records_dir", None, "Instead of tf.data: our pipeline on --data_dir's files against our pipeline on these "
      "TFRecord shards of the same images.")
  flags.DEFINE_enum("start_method", "fork", ["fork", "spawn"], "How our pipeline starts its worker processes.")


def make_fake_data(root, num_images, num_classes=10, size=(375, 500), seed=0):
  """Writes an ImageNet-like train/ tree of `num_images` JPEGs (quality 90) with smooth structure plus noise."""
  rng = np.random.RandomState(seed)
  for i in range(num_images):
    folder = os.path.join(root, "train", "n%08d" % (i % num_classes))
    if not os.path.isdir(folder):
      os.makedirs(folder)
    coarse = rng.randint(0, 256, size=(12, 16, 3)).astype(np.float32)
    image = cv2.resize(coarse, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)
    image += rng.normal(0, 18, size=image.shape).astype(np.float32)
    ok, data = cv2.imencode(".jpg", np.clip(image, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
    with open(os.path.join(folder, "img_%06d.jpg" % i), "wb") as f:
      f.write(data.tobytes())
  print("wrote %d %dx%d JPEGs in %d classes under %s" %
        (num_images, size[1], size[0], num_classes, os.path.join(root, "train")))


def _session_config(n):
  return tf.ConfigProto(intra_op_parallelism_threads=n, inter_op_parallelism_threads=n)


def _limit_threads(dataset, n):
  options = tf.data.Options()
  threading = getattr(options, "threading", None) or options.experimental_threading
  threading.private_threadpool_size = n
  threading.max_intra_op_parallelism = 1
  return dataset.with_options(options)


def tf_data_pipeline(paths, labels, image_size, batch_size, n):
  """The reference: the same crop/resize/flip written with tf.data and tf.image ops."""
  h, w = image_size

  def load(path, label):
    image = tf.image.decode_jpeg(tf.io.read_file(path), channels=3)
    begin, size, _ = tf.image.sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
        min_object_covered=augment.AREA_RANGE[0], aspect_ratio_range=augment.ASPECT_RANGE,
        area_range=augment.AREA_RANGE, max_attempts=augment.MAX_ATTEMPTS, use_image_if_no_bounding_boxes=True)
    crop = tf.slice(image, begin, size)
    resized = tf.image.resize_bilinear(crop[None], [h, w])[0]
    flipped = tf.image.random_flip_left_right(resized)
    return tf.cast(tf.clip_by_value(flipped, 0, 255), tf.uint8), label

  dataset = tf.data.Dataset.from_tensor_slices((paths, labels)).repeat().shuffle(1024, seed=0)
  dataset = dataset.map(load, num_parallel_calls=n).batch(batch_size, drop_remainder=True).prefetch(2)
  return _limit_threads(dataset, n)


def _cpu_seconds(pids):
  """CPU seconds (user + system) used so far by this process and the given child pids."""
  own = os.times()
  total = own.user + own.system
  tick = os.sysconf("SC_CLK_TCK")
  for pid in pids:
    try:
      with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
      total += (int(fields[11]) + int(fields[12])) / float(tick)
    except (IOError, OSError, IndexError):
      pass
  return total


def _measure(images_op, n, batch_size, warmup, seconds, pids=()):
  """(images, wall seconds, CPU seconds) of `seconds` of sess.run after `warmup` untimed batches."""
  with tf.Session(config=_session_config(n)) as sess:
    for _ in range(warmup):
      sess.run(images_op)
    images, start, cpu0 = 0, time.time(), _cpu_seconds(pids)
    while time.time() - start < seconds:
      sess.run(images_op)
      images += batch_size
    return images, time.time() - start, _cpu_seconds(pids) - cpu0


def _segment(kind, dataset, size, args, n):
  """Builds one pipeline from scratch, times it and tears it down (nothing of it runs during the other's turn)."""
  with tf.Graph().as_default():
    if kind == "tf.data":
      ref = tf_data_pipeline(list(dataset.paths), dataset.labels, size, args.batch_size, n)
      return _measure(_iterator(ref).get_next()[0], n, args.batch_size, args.warmup_batches, args.seconds / args.rounds)
    t0 = time.time()
    with InputPipeline(dataset, size, args.batch_size, True, workers=n, seed=0, start_method=args.start_method) as pipe:
      next(pipe.batches())
      started = time.time() - t0  # constructor + first batch: includes starting the workers
      result = _measure(
          _iterator(pipe.tf_dataset()).get_next()[0], n, args.batch_size, args.warmup_batches,
          args.seconds / args.rounds, pipe.worker_pids)
    _segment.started = started
    return result


def _iterator(dataset):
  return tf.data.make_one_shot_iterator(dataset) if hasattr(tf.data, "make_one_shot_iterator") \
      else dataset.make_one_shot_iterator()


def compare(args, counts):
  """Times both pipelines at each worker count in `counts` (settings: the command's flags) and prints the table."""
  dataset = open_dataset("auto", args.data_dir, "train")
  if not hasattr(dataset, "paths"):
    raise UsageError("bench_input needs an image-file dataset (ImageFolder or list file), got %s" % dataset.name)
  size = (args.image_size, args.image_size)
  rows = []
  for n in counts:
    totals = {"ours": np.zeros(3), "tf.data": np.zeros(3)}
    # ABBA order over the rounds: a load change on a shared machine hits both pipelines alike.
    for r in range(args.rounds):
      for kind in (("ours", "tf.data") if r % 2 == 0 else ("tf.data", "ours")):
        totals[kind] += _segment(kind, dataset, size, args, n)
    (ours_img, ours_wall, ours_cpu), (ref_img, ref_wall, ref_cpu) = totals["ours"], totals["tf.data"]
    ours_rate, ref_rate = ours_img / ours_wall, ref_img / ref_wall
    ours_eff, ref_eff = ours_img / ours_cpu, ref_img / ref_cpu
    rows.append((n, ours_rate, ref_rate, _segment.started, ours_eff, ref_eff))
    print(
        "workers=%d  ours %.1f img/s (%.1f img/CPU-s, %.2f CPUs busy)  tf.data %.1f img/s (%.1f img/CPU-s, "
        "%.2f CPUs busy)  ratio %.2fx  (first batch %.2f s after start, %s)" %
        (n, ours_rate, ours_eff, ours_rate / ours_eff, ref_rate, ref_eff, ref_rate / ref_eff, ours_rate / ref_rate,
         _segment.started, args.start_method), flush=True)
  print()
  # "CPUs busy" = wall rate / CPU rate: below N means the pipeline did not get N cores (other jobs, or waiting).
  table = bench_common.Table([("cores (N)", "%d"), ("ours img/s", "%.0f"), ("ours img/s/core", "%.0f"),
                              ("ours img/CPU-s", "%.0f"), ("ours CPUs busy", "%.2f"), ("tf.data img/s", "%.0f"),
                              ("tf.data img/s/core", "%.0f"), ("tf.data img/CPU-s", "%.0f"),
                              ("tf.data CPUs busy", "%.2f"), ("ours / tf.data (wall)", "%.2fx"),
                              ("ours / tf.data (CPU)", "%.2fx")])
  table.header()
  for n, ours, ref, _, ours_cpu, ref_cpu in rows:
    table.row(n, ours, ours / n, ours_cpu, ours / ours_cpu, ref, ref / n, ref_cpu, ref / ref_cpu, ours / ref,
              ours_cpu / ref_cpu)
  if len(rows) > 1 and rows[0][0] == 1:
    for n, ours, ref in [r[:3] for r in rows[1:]]:
      print("scaling 1 -> %d workers: ours %.2fx, tf.data %.2fx" % (n, ours / rows[0][1], ref / rows[0][2]))
  print(bench_common.machine_line(("OpenCV", cv2.__version__), ("TensorFlow", tf.__version__)))


def compare_formats(args, counts):
  """Our pipeline on the image files of --data_dir and on the TFRecord shards of --records_dir, at each worker
  count; prints img/s and img/s per worker."""
  files = open_dataset("auto", args.data_dir, "train")
  records = open_dataset("tfrecord", args.records_dir, "train")
  if len(files) != len(records):
    raise UsageError("--data_dir has %d training images, --records_dir %d records: expected the same images" %
                     (len(files), len(records)))
  size = (args.image_size, args.image_size)
  table = bench_common.Table([("workers", "%d"), ("JPEG files img/s", "%.0f"), ("per worker", "%.0f"),
                              ("JPEG img/CPU-s", "%.0f"), ("TFRecord img/s", "%.0f"), ("per worker", "%.0f"),
                              ("TFRecord img/CPU-s", "%.0f"), ("TFRecord / files", "%.2fx")])
  table.header()
  for n in counts:
    totals = {"files": np.zeros(3), "records": np.zeros(3)}
    for r in range(args.rounds):
      for kind in (("files", "records") if r % 2 == 0 else ("records", "files")):
        totals[kind] += _segment("ours", files if kind == "files" else records, size, args, n)
    (f_img, f_wall, f_cpu), (r_img, r_wall, r_cpu) = totals["files"], totals["records"]
    table.row(n, f_img / f_wall, f_img / f_wall / n, f_img / f_cpu, r_img / r_wall, r_img / r_wall / n, r_img / r_cpu,
              (r_img / r_wall) / (f_img / f_wall))
  print(bench_common.machine_line(("OpenCV", cv2.__version__), ("TensorFlow", tf.__version__)))


def profile_stages(args):
  """CPU ms per example of each stage of our per-example work, and of tf.image.decode_jpeg, in this process; for
  TFRecords also the read and the whole example without the data CRC check.

    Single-threaded process CPU time, so the numbers hold up on a busy machine better than wall-clock rates.
    """
  from input import image_codec, sampling
  cv2.setNumThreads(1)
  dataset = open_dataset("auto", args.data_dir, "train")
  count = min(len(dataset), 200)
  data = [dataset.read_encoded(i) for i in range(count)]
  size = (args.image_size, args.image_size)
  transform = augment.Transform(size, training=True)
  out = np.empty(size + (3,), np.uint8)
  decoded = image_codec.decode_bgr(data[0], "x")
  crop = decoded[:decoded.shape[0] * 3 // 4, :decoded.shape[1] * 3 // 4]

  with tf.Graph().as_default():
    encoded = tf.placeholder(tf.string, [])
    tf_decode = tf.image.decode_jpeg(encoded, channels=3)
    tf_noop = tf.identity(encoded)
    sess = tf.Session(config=_session_config(1))

  stages = [
      ("read encoded (record: + CRC)", lambda i: dataset.read_encoded(i)),
      ("per-example RNG", lambda i: sampling.augment_rng(0, 0, i)),
      ("JPEG header size", lambda i: image_codec.jpeg_size(data[i])),
      ("cv2.imdecode full", lambda i: image_codec.decode_bgr(data[i], "x")),
      ("cv2.imdecode 1/2", lambda i: image_codec.decode_bgr(data[i], "x", 2)),
      ("cv2.resize 3/4 crop", lambda i: cv2.resize(crop, size[::-1], interpolation=cv2.INTER_LINEAR)),
      ("flip+RGB+copy", lambda i: out.__setitem__(Ellipsis, out[:, ::-1, ::-1])),
      ("whole train example", lambda i: transform.apply(dataset, i, sampling.augment_rng(0, 0, i), out)),
      ("tf decode_jpeg (minus run)", lambda i: sess.run(tf_decode, {encoded: data[i]})),
      ("tf session.run overhead", lambda i: sess.run(tf_noop, {encoded: data[i]})),
  ]
  if getattr(dataset, "check_crc", False):  # TFRecords: what the data CRC of each read costs
    unchecked = copy.copy(dataset)
    unchecked.check_crc = False
    stages[1:1] = [("read record, no data CRC", lambda i: unchecked.read_encoded(i))]
    stages.append(
        ("whole example, no data CRC", lambda i: transform.apply(unchecked, i, sampling.augment_rng(0, 0, i), out)))
  results = {}
  for name, fn in stages:
    for i in range(min(count, 10)):  # warm-up, untimed
      fn(i)
    start = time.process_time()
    for i in range(count):
      fn(i)
    results[name] = (time.process_time() - start) / count * 1000.0
  results["tf decode_jpeg (minus run)"] -= results["tf session.run overhead"]
  print("CPU ms per example at %dx%d over %d %s:" %
        (size[0], size[1], count, "records" if hasattr(dataset, "check_crc") else "files"))
  for name, _ in stages:
    print("  %-30s %7.3f" % (name, results[name]))


def _counts(values):
  try:
    counts = [int(n) for n in values]
  except ValueError:
    counts = []
  if not counts or min(counts) < 1:
    raise UsageError("--workers=%s: expected comma-separated counts of at least 1, e.g. 1,2" % ",".join(values))
  return counts


def run(argv):
  if len(argv) > 1:
    raise UsageError("unexpected arguments %s" % " ".join(argv[1:]))
  tf.logging.set_verbosity(tf.logging.ERROR)
  tf.disable_v2_behavior()
  if FLAGS.make_fake_data:
    make_fake_data(FLAGS.make_fake_data, FLAGS.num_images, FLAGS.num_classes)
    return
  if not FLAGS.data_dir:
    raise UsageError("give --data_dir (or --make_fake_data DIR)")
  for name in ("image_size", "batch_size", "rounds"):
    if FLAGS[name].value < 1:
      raise UsageError("--%s=%d: must be at least 1" % (name, FLAGS[name].value))
  if FLAGS.seconds <= 0 or FLAGS.warmup_batches < 0:
    raise UsageError("--seconds must be positive and --warmup_batches not negative")
  try:
    if FLAGS.stages:
      profile_stages(FLAGS)
      return
    if FLAGS.records_dir:
      compare_formats(FLAGS, _counts(FLAGS.workers))
      return
    compare(FLAGS, _counts(FLAGS.workers))
  except ValueError as e:
    raise UsageError(str(e))


if __name__ == "__main__":
  define_flags()
  command.run_command(run)
