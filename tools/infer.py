"""Classifies images with a ViT loaded from an official .npz or a TF checkpoint written by our trainer.

  python -m tools.infer --model ViT-Ti/16 --image_size 224 --checkpoint PATH [--num_classes 10] [--out logits.npy] \
      IMAGE...

Preprocessing is the official evaluation one: decode to RGB, resize to the model size (bilinear), scale to [-1, 1].
Prints the top-5 classes of each image (names from class_names.txt beside the checkpoint, if present); --out
writes the float32 logits, one row per image in the order given. Any bad input exits with one line and code 2.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import numpy as np  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "model", "ViT-B/16", "Model variant: ViT-Ti/16, ViT-S/16, ViT-S/32, ViT-B/16, ViT-B/32, "
    "ViT-B/8, ViT-L/16, ViT-L/32, ViT-H/14 (also B_16, b/16, ...).")
flags.DEFINE_string(
    "image_size", "224", "Model input size: one int for square images or HxW (e.g. 224x320); "
    "must be divisible by the patch size. The position embedding is resized if the checkpoint "
    "was trained at another size.")
flags.DEFINE_string(
    "checkpoint", None, "Official ViT .npz (original or big_vision naming) or a TensorFlow "
    "checkpoint of our trainer (prefix or directory).")
flags.DEFINE_integer("num_classes", 0, "Classes of the head; 0 = take it from the checkpoint's head.")
flags.DEFINE_string("out", "", "If set, write the float32 logits to this .npy file, one row per image.")
flags.DEFINE_integer("batch_size", 8, "Images per forward pass.")
flags.DEFINE_integer("top_k", 5, "Classes printed per image.")
flags.DEFINE_string("scope", "vit", "Variable scope of the model in TF checkpoints.")


class UsageError(Exception):
  """A bad path, image or checkpoint: printed as one line, exit code 2."""


def parse_size(text):
  """(height, width) from "224" or "224x320"."""
  try:
    parts = [int(p) for p in str(text).lower().split("x")]
  except ValueError:
    raise UsageError("--image_size %r is not an int or HxW" % text)
  if len(parts) == 1:
    parts = parts * 2
  if len(parts) != 2 or min(parts) <= 0:
    raise UsageError("--image_size %r is not an int or HxW" % text)
  return tuple(parts)


def load_image(path, size):
  """Official eval preprocessing of one file: RGB float32 [H, W, 3] in [-1, 1]; UsageError if unreadable."""
  import cv2  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise UsageError("image %s does not exist" % path)
  bgr = cv2.imread(path, cv2.IMREAD_COLOR)
  if bgr is None:
    raise UsageError("image %s could not be decoded (not an image file cv2 can read)" % path)
  rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
  rgb = cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
  return rgb.astype(np.float32) / 127.5 - 1.0


def class_names_for(checkpoint_path, num_classes):
  """Names from class_names.txt beside the checkpoint, or "class_<i>" when absent or of the wrong length."""
  directory = checkpoint_path if os.path.isdir(checkpoint_path) else os.path.dirname(os.path.abspath(checkpoint_path))
  path = os.path.join(directory, "class_names.txt")
  if os.path.isfile(path):
    with open(path) as f:
      names = [line.rstrip("\n") for line in f if line.strip()]
    if len(names) == num_classes:
      return names
  return ["class_%d" % i for i in range(num_classes)]


def predict(model_name, image_size, checkpoint_path, num_classes, images, batch_size=8, scope="vit"):
  """Logits [N, classes] of preprocessed `images` with the checkpoint loaded; returns (logits, num_classes)."""
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  from vit_raw import checkpoint  # pylint: disable=g-import-not-at-top
  from vit_raw import configs  # pylint: disable=g-import-not-at-top
  from vit_raw import model  # pylint: disable=g-import-not-at-top
  from vit_raw import cpu_config  # pylint: disable=g-import-not-at-top
  tf.logging.set_verbosity(tf.logging.ERROR)  # before disable_v2_behavior, which warns about resource variables
  tf.disable_v2_behavior()
  config = configs.get_config(model_name)
  values, _ = checkpoint.read_checkpoint(checkpoint_path, config, scope)
  if not num_classes:
    if "head/kernel" not in values:
      raise UsageError("checkpoint %s has no head; pass --num_classes" % checkpoint_path)
    num_classes = int(values["head/kernel"].shape[-1])
  elif "head/kernel" in values and int(values["head/kernel"].shape[-1]) != num_classes:
    raise UsageError("checkpoint %s has a %d-class head but --num_classes=%d" %
                     (checkpoint_path, int(values["head/kernel"].shape[-1]), num_classes))
  representation = None
  if "pre_logits/kernel" in values:
    representation = int(values["pre_logits/kernel"].shape[-1])
  h, w = image_size
  with tf.Graph().as_default():
    inputs = tf.placeholder(tf.float32, [None, h, w, 3], name="images")
    logits = model.vit(inputs, config, num_classes, is_training=False, representation_size=representation, scope=scope)
    assign = checkpoint.init_from_checkpoint(checkpoint_path, config, num_classes, (h, w), keep_pre_logits=True,
                                             scope=scope)
    with tf.Session(config=cpu_config.fast_cpu_config()) as sess:
      sess.run(tf.global_variables_initializer())
      assign(sess)
      rows = [sess.run(logits, {inputs: images[i:i + batch_size]}) for i in range(0, len(images), batch_size)]
  return np.concatenate(rows, axis=0).astype(np.float32), num_classes


def run(argv):
  """The command; raises UsageError / ValueError for bad input."""
  paths = argv[1:]
  if not FLAGS.checkpoint:
    raise UsageError("--checkpoint is required")
  if not paths:
    raise UsageError("no images given; usage: python -m tools.infer --checkpoint PATH IMAGE...")
  # Everything a user can get wrong is checked before TensorFlow is imported: errors come fast and alone.
  if not (os.path.exists(FLAGS.checkpoint) or os.path.exists(FLAGS.checkpoint + ".index")):
    raise UsageError("checkpoint %s does not exist; expected an official .npz file or a TensorFlow checkpoint "
                     "(prefix or directory)" % FLAGS.checkpoint)
  from vit_raw import configs  # pylint: disable=g-import-not-at-top
  config = configs.get_config(FLAGS.model)
  size = parse_size(FLAGS.image_size)
  if size[0] % config.patch_size or size[1] % config.patch_size:
    raise UsageError("--image_size %dx%d is not divisible by the patch size %d of %s" %
                     (size[0], size[1], config.patch_size, config.name))
  images = np.stack([load_image(p, size) for p in paths])
  logits, num_classes = predict(config, size, FLAGS.checkpoint, FLAGS.num_classes, images, FLAGS.batch_size,
                                FLAGS.scope)
  names = class_names_for(FLAGS.checkpoint, num_classes)
  shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
  probs = shifted / shifted.sum(axis=1, keepdims=True)
  for path, row in zip(paths, probs):
    top = np.argsort(-row)[:FLAGS.top_k]
    print("%s: %s" % (path, ", ".join("%s %.4f" % (names[i], row[i]) for i in top)))
  if FLAGS.out:
    np.save(FLAGS.out, logits)
    print("wrote logits %s to %s" % (logits.shape, FLAGS.out))


def main(argv):
  try:
    run(argv)
  except (UsageError, ValueError, IOError, OSError) as e:
    sys.stderr.write("error: %s\n" % str(e).splitlines()[0])
    sys.exit(2)


if __name__ == "__main__":
  app.run(main)
