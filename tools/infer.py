"""Classifies images with a trained ViT: a run folder, a checkpoint (ours or official .npz) or an exported model.

  python -m tools.infer --model_dir runs/default IMAGE_OR_FOLDER_OR_LIST...
  python -m tools.infer --checkpoint ViT-B_16.npz --model ViT-B/16 --image_size 384 images/
  python -m tools.infer --checkpoint vit.onnx --out predictions.json images.txt    (also .pb, SavedModel folders)

Arguments are image files, folders (searched recursively for .jpg .jpeg .png .bmp .webp) or .txt list files (one
path per line, an optional integer label last). Images are decoded by the training pipeline's decoder, resized as
in evaluation and run in batches; a file that cannot be decoded is skipped with a line on stderr. Prints the top-k
classes of each image with names from the run's class_names.txt (class ids when there is none); --out writes the
results as .npy (float32 logits, one row per classified image, in the printed order), .json or .csv. --hflip
averages each image's softmax with its mirror image's (the trainer's --eval_hflip).
"""
import csv
import io
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402
import numpy as np  # noqa: E402

from tools import command  # noqa: E402
from tools import images as images_lib  # noqa: E402
from tools import model_source  # noqa: E402
from tools.command import UsageError  # noqa: E402

OUT_FORMATS = (".npy", ".json", ".csv")

FLAGS = flags.FLAGS
model_source.define_flags()
flags.adopt_module_key_flags(model_source)  # --help lists the model-selection flags too
flags.DEFINE_string(
    "class_names", None, "A class_names.txt (one name per line, in label order). Default: the run's, or "
    "the one beside --checkpoint; without one, class ids are printed.")
flags.DEFINE_integer("batch_size", 8, "Images per forward pass (an export with a static batch uses its own).")
flags.DEFINE_integer("top_k", 5, "Classes printed (and written to .json/.csv) per image.")
flags.DEFINE_string(
    "out", None, "Write the results here: .npy (float32 logits [images, classes]), .json (path, top-k "
    "classes and probabilities, logits) or .csv (path and top-k classes with probabilities).")
flags.DEFINE_bool("overwrite", False, "Replace --out if it exists.")
flags.DEFINE_bool(
    "hflip", False, "Flip averaging, as the trainer's --eval_hflip: each image's softmax averaged with that of its "
    "mirror image (two forward passes). The printed probabilities are that mean; --out's logits are its log.")
flags.DEFINE_enum("precision", "float32", ["float32", "float16", "bfloat16"], "Compute dtype when running a checkpoint "
                  "(an export runs as exported).")


def read_class_names(path):
  with open(path) as f:
    return [line.rstrip("\n") for line in f if line.strip()]


def softmax(logits):
  shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
  return shifted / shifted.sum(axis=1, keepdims=True)


def log_softmax(logits):
  shifted = logits - logits.max(axis=1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def flip_averaged(logits, mirrored):
  """The log of the mean of two softmaxes, in log space (no -inf where a probability underflows)."""
  return (np.logaddexp(log_softmax(logits), log_softmax(mirrored)) - np.log(2.0)).astype(np.float32)


def open_model(fv):
  """(runner, class names or None, where the names came from) for the flags; UsageError on bad input."""
  from tools import runtimes  # pylint: disable=g-import-not-at-top
  path = fv.checkpoint
  if path and not fv.model_dir and runtimes.export_kind(path):
    given = [n for n in ("model", "image_size", "num_classes") if fv[n].value is not None]
    if given:
      raise UsageError("%s is an exported model, which carries its own model and size; drop --%s" %
                       (path, " --".join(given)))
    _quiet_tensorflow()
    return runtimes.open_export(path), model_source.class_names_beside(path), os.path.dirname(os.path.abspath(path))
  if path and os.path.isfile(path) and os.path.splitext(path)[1].lower() not in (".npz", ".pb", ".onnx"):
    raise UsageError("--checkpoint %s: unknown model file extension %r; expected a checkpoint prefix or folder, an "
                     ".npz, a .pb, a .onnx or a SavedModel folder" % (path, os.path.splitext(path)[1]))
  if path and not fv.model_dir and not (os.path.exists(path) or os.path.exists(path + ".index")):
    raise UsageError("checkpoint %s does not exist; expected a checkpoint of ours (prefix or folder), an official "
                     ".npz, or an export (.pb, .onnx, SavedModel folder)" % path)
  source = model_source.from_flags(fv)
  sys.stderr.write(model_source.describe(source) + "\n")
  _quiet_tensorflow()
  where = fv.model_dir or os.path.dirname(os.path.abspath(path))
  return runtimes.session_runner(source, fv.precision), source.class_names, where


def _quiet_tensorflow():
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  tf.logging.set_verbosity(tf.logging.ERROR)
  tf.disable_v2_behavior()


def classify(runner, paths, batch_size, report, hflip=False):
  """(classified paths, float32 logits [n, classes]) of the decodable images among `paths`; with hflip, the log of
  each image's softmax averaged with its mirror image's."""
  done, rows = [], []
  for chunk_paths, chunk in images_lib.batches(paths, runner.image_size, runner.batch_size or batch_size, report):
    logits = runner.logits(chunk)
    if hflip:
      logits = flip_averaged(logits, runner.logits(np.ascontiguousarray(chunk[:, :, ::-1])))
    rows.append(logits)
    done.extend(chunk_paths)
  logits = np.concatenate(rows) if rows else np.zeros([0, runner.num_classes], np.float32)
  return done, logits


def _label(names, index):
  return names[index] if names else "class %d" % index


def results_text(fmt, paths, logits, names, top_k):
  """The --out content for .json or .csv."""
  probs = softmax(logits) if len(logits) else logits
  if fmt == ".json":
    items = []
    for path, row, prob in zip(paths, logits, probs):
      top = np.argsort(-prob)[:top_k]
      items.append({
          "path": path,
          "top_k": [{
              "class": int(i),
              "name": _label(names, i),
              "probability": float(prob[i])
          } for i in top],
          "logits": [float(v) for v in row]
      })
    return json.dumps(items, indent=1) + "\n"
  text = io.StringIO()
  writer = csv.writer(text, lineterminator="\n")
  header = ["path"]
  for rank in range(1, min(top_k, logits.shape[1]) + 1):
    header += ["class_%d" % rank, "name_%d" % rank, "probability_%d" % rank]
  writer.writerow(header)
  for path, prob in zip(paths, probs):
    row = [path]
    for i in np.argsort(-prob)[:top_k]:
      row += [int(i), _label(names, i), "%.6f" % prob[i]]
    writer.writerow(row)
  return text.getvalue()


def write_results(out, paths, logits, names, top_k):
  fmt = os.path.splitext(out)[1].lower()
  with command.atomic_output(out) as tmp:
    if fmt == ".npy":
      with open(tmp, "wb") as f:
        np.save(f, logits.astype(np.float32))
    else:
      with open(tmp, "w") as f:
        f.write(results_text(fmt, paths, logits, names, top_k))


def run(argv):
  """The command; raises UsageError for bad input."""
  arguments = argv[1:]
  if not arguments:
    raise UsageError("no images given; usage: python -m tools.infer --model_dir RUN IMAGE_OR_FOLDER_OR_LIST...")
  if FLAGS.out:
    if os.path.splitext(FLAGS.out)[1].lower() not in OUT_FORMATS:
      raise UsageError("--out %s: unknown extension; expected %s" % (FLAGS.out, ", ".join(OUT_FORMATS)))
    command.check_out_path(FLAGS.out, FLAGS.overwrite)
  if FLAGS.class_names and not os.path.isfile(FLAGS.class_names):
    raise UsageError("--class_names %s does not exist" % FLAGS.class_names)
  if FLAGS.batch_size <= 0 or FLAGS.top_k <= 0:
    raise UsageError("--batch_size and --top_k must be positive")
  paths, problems = images_lib.expand(arguments)
  if not paths:
    raise UsageError("no image files to classify: %s" % "; ".join(problems))
  for line in problems:
    sys.stderr.write("skipped %s\n" % line)
  runner, names, where = open_model(FLAGS)
  if FLAGS.class_names:
    names = read_class_names(FLAGS.class_names)
  if names is not None and len(names) != runner.num_classes:
    sys.stderr.write("class names have %d entries, the model %d classes: printing class ids\n" %
                     (len(names), runner.num_classes))
    names = None
  elif names is None:
    sys.stderr.write("no %s for %s: printing class ids\n" % (model_source.CLASS_NAMES_FILE, where))
  skipped = []

  def report(line):
    skipped.append(line)
    sys.stderr.write(line + "\n")

  done, logits = classify(runner, paths, FLAGS.batch_size, report, FLAGS.hflip)
  runner.close()
  if not done:
    raise UsageError("none of the %d images could be decoded" % len(paths))
  for path, row in zip(done, softmax(logits)):
    top = np.argsort(-row)[:FLAGS.top_k]
    print("%s: %s" % (path, ", ".join("%s %.4f" % (_label(names, i), row[i]) for i in top)))
  if FLAGS.out:
    write_results(FLAGS.out, done, logits, names, FLAGS.top_k)
  sys.stderr.write(
      "classified %d images with %s%s%s\n" %
      (len(done), runner.name, ", skipped %d" %
       (len(skipped) + len(problems)) if skipped or problems else "", "; wrote %s" % FLAGS.out if FLAGS.out else ""))


if __name__ == "__main__":
  command.run_command(run)
