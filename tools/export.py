"""Exports a trained ViT for deployment: frozen graph (.pb, for Ascend ATC), SavedModel, ONNX or the official .npz.

  python -m tools.export --model_dir runs/default --format pb --out vit.pb [--batch_size 1]
  python -m tools.export --checkpoint ViT-B_16.npz --model ViT-B/16 --image_size 384 --format onnx --out vit.onnx

The exported graph takes `images` (uint8 [B, H, W, 3] RGB, scaled to [-1, 1] inside; or float32 already scaled with
--input float) and returns `logits` and `probabilities`. Every export is reloaded from what was written and run on a
few probe images against the checkpoint in a session before it is renamed into place; the command prints the path,
format, input/output names and shapes, size and the largest logit difference. docs/deploy.md describes each format.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from tools import command  # noqa: E402
from tools import exporters  # noqa: E402
from tools import model_source  # noqa: E402
from tools.command import UsageError  # noqa: E402

FLAGS = flags.FLAGS
model_source.define_flags()
flags.adopt_module_key_flags(model_source)  # --help lists the model-selection flags too
flags.DEFINE_enum(
    "format", None, exporters.FORMATS, "pb: frozen inference GraphDef (Ascend ATC, TF 1.x serving); saved_model: "
    "SavedModel folder with a serving_default signature (TF Serving, tf.saved_model.load); onnx: through tf2onnx "
    "(ONNX Runtime, TensorRT); npz: the weights in the official layout (JAX/timm, --init_checkpoint).")
flags.DEFINE_string(
    "out", None, "Where to write: a .pb file, a SavedModel folder, a .onnx file or a .npz file. "
    "Written under a temporary name and renamed when verified.")
flags.DEFINE_bool("overwrite", False, "Replace --out if it exists.")
flags.DEFINE_integer(
    "batch_size", None, "Static batch size of the exported graph (ATC and the NPU want one), or 0 for a "
    "dynamic batch. Default: 1 for pb, dynamic for saved_model and onnx.")
flags.DEFINE_enum(
    "input", "uint8", ["uint8", "float"], "uint8: images are uint8 RGB 0..255 and scaled to [-1, 1] inside "
    "the graph; float: float32 images already scaled to [-1, 1].")
flags.DEFINE_enum(
    "precision", "float32", ["float32", "float16", "bfloat16"], "Compute dtype of the exported graph (pb and "
    "saved_model; onnx and npz are float32). Layer norm, softmax and the head stay float32 as in training.")
flags.DEFINE_integer("opset", 13, "ONNX opset of --format onnx.")


def run(argv):
  if len(argv) > 1:
    raise UsageError("unexpected arguments %s; tools.export takes flags only" % " ".join(argv[1:]))
  exporters.check_request(FLAGS.format, FLAGS.out, FLAGS.overwrite, FLAGS.precision)
  if FLAGS.batch_size is not None and FLAGS.batch_size < 0:
    raise UsageError("--batch_size must be >= 0 (0: dynamic), got %d" % FLAGS.batch_size)
  source = model_source.from_flags()
  print(model_source.describe(source))
  _quiet_tensorflow()
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  from launch import storage  # pylint: disable=g-import-not-at-top
  try:
    exporters.export(source, FLAGS.format, FLAGS.out, FLAGS.batch_size, FLAGS.input, FLAGS.precision, FLAGS.opset)
  except (OSError, tf.errors.OpError) as e:
    why = storage.reason(e)
    if why is None:
      raise
    # The export was written under a temporary name beside --out (command.atomic_output), removed on failure.
    sys.stderr.write(
        "error: cannot write the %s export %s to %s: %s; nothing was written at %s\n" %
        (FLAGS.format, os.path.basename(FLAGS.out), os.path.dirname(os.path.abspath(FLAGS.out)), why, FLAGS.out))
    sys.exit(1)
  except RuntimeError as e:
    sys.stderr.write("error: %s\n" % str(e).splitlines()[0])
    sys.exit(1)


def _quiet_tensorflow():
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  tf.logging.set_verbosity(tf.logging.ERROR)
  tf.disable_v2_behavior()


if __name__ == "__main__":
  command.run_command(run)
