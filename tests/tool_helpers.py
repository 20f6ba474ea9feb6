"""Tiny trained-looking models for the tool tests: an official .npz and a run folder as launch.train leaves one."""
import os
import subprocess
import sys

import numpy as np
import tensorflow.compat.v1 as tf

from launch import run_record
from tests import numpy_vit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A 2-block ViT of width 16 on 8x8 images in 4x4 patches (2x2 grid, 5 tokens), 3 classes.
SHAPE = {"patch_size": 4, "hidden_size": 16, "num_layers": 2, "num_heads": 2, "mlp_dim": 32}
IMAGE_SIZE = 8
CLASS_NAMES = ["zero", "one", "two"]
MODEL_FLAGS = ["--model", "tiny"] + ["--%s=%d" % (k, v) for k, v in sorted(SHAPE.items())]


def has_onnx():
  """Whether tf2onnx and onnxruntime import here (tools.export --format onnx and its check need both)."""
  try:
    import onnxruntime  # noqa: F401 pylint: disable=g-import-not-at-top,unused-import
    import tf2onnx  # noqa: F401 pylint: disable=g-import-not-at-top,unused-import
    return True
  except ImportError:
    return False


def tiny_params(seed=0):
  """Random official-layout weights of the tiny model (non-zero head)."""
  return numpy_vit.random_official_params(SHAPE["hidden_size"], SHAPE["num_layers"], SHAPE["num_heads"],
                                          SHAPE["mlp_dim"], SHAPE["patch_size"], 5, len(CLASS_NAMES), seed=seed,
                                          scale=0.3)


def write_npz(path, params):
  np.savez(path, **params)
  return path


def write_run(model_dir, params, step=2, ema_params=None):
  """A run folder: flags.txt and class_names.txt through launch.run_record, and a TF checkpoint of ours holding
  `params` (under the model scope "vit", as the trainer saves it, plus a global step) and, given `ema_params`, those
  as the weights' moving average (ema/vit/..., as launch.ema saves it)."""
  from launch import ema  # pylint: disable=g-import-not-at-top
  from vit_raw import checkpoint_mapping  # pylint: disable=g-import-not-at-top
  from vit_raw import configs  # pylint: disable=g-import-not-at-top
  from vit_raw import model  # pylint: disable=g-import-not-at-top
  os.makedirs(model_dir)
  lines = ["--model=tiny", "--image_size=%d" % IMAGE_SIZE] + ["--%s=%d" % item for item in sorted(SHAPE.items())]
  run_record.write_flag_lines(model_dir, lines)
  run_record.write_class_names(model_dir, CLASS_NAMES)
  config = configs.get_config("tiny", **SHAPE)
  ours, _ = checkpoint_mapping.official_to_ours(params, config)
  with tf.Graph().as_default():
    model.vit(tf.zeros([1, IMAGE_SIZE, IMAGE_SIZE, 3]), config, len(CLASS_NAMES), False)
    step_var = tf.train.get_or_create_global_step()
    shadows = {}
    if ema_params is not None:
      averaged, _ = checkpoint_mapping.official_to_ours(ema_params, config)
      for var in tf.trainable_variables():
        shadow = tf.get_variable(ema.shadow_name(var.op.name), initializer=var.initial_value, trainable=False)
        shadows[shadow] = averaged[var.op.name[len("vit/"):]]
    with tf.Session() as sess:
      sess.run(tf.global_variables_initializer())
      for var in tf.global_variables():
        name = var.op.name[len("vit/"):]
        if name in ours and var.op.name.startswith("vit/"):
          var.load(ours[name], sess)
      for shadow, value in shadows.items():
        shadow.load(value, sess)
      step_var.load(step, sess)
      tf.train.Saver().save(sess, os.path.join(model_dir, "model.ckpt"), global_step=step)
  return model_dir


def uint8_images(n, size=IMAGE_SIZE, seed=5):
  return np.random.RandomState(seed).randint(0, 256, [n, size, size, 3]).astype(np.uint8)


def run_tool(module, *args, python=None, timeout=300):
  """Runs `python -m module args` at the repo root; returns the CompletedProcess (text)."""
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run([python or sys.executable, "-m", module] + list(args), cwd=ROOT, env=env,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=timeout)


def run_tool_script(python, script, *args, timeout=300):
  """Runs `python -c script args` (e.g. a loader on the other stack); returns the CompletedProcess (text)."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run([python, "-c", script] + list(args), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, universal_newlines=True, timeout=timeout)


def error_lines(stderr):
  """The lines of stderr that are not TensorFlow's own start-up logging."""
  noise = ("WARNING: All log messages", "I0000", "W0000", "oneDNN custom operations")
  return [line for line in stderr.splitlines() if line.strip() and not line.startswith(noise)]


def other_stack_python():
  """(python of the other stack, reason it is missing): .venv for TF 2.x, .venv-tf2 for TF 1.x, looked up at the
  repository root and at its main worktree (the environments are shared between worktrees)."""
  want = ".venv-tf2" if tf.__version__.startswith("1.") else ".venv"
  roots = [ROOT]
  try:
    common = subprocess.run(["git", "rev-parse", "--git-common-dir"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, universal_newlines=True).stdout.strip()
    if common:
      roots.append(os.path.dirname(os.path.abspath(os.path.join(ROOT, common))))
  except OSError:
    pass
  for root in roots:
    python = os.path.join(root, want, "bin", "python")
    if os.path.isfile(python):
      return python, None
  return None, "the other stack's environment %s is absent (looked in %s)" % (want, ", ".join(roots))


def assert_usage_error(done, *needles):
  """A tool's usage error: exit code 2 and exactly one `error: ...` line on stderr, holding every needle."""
  lines = error_lines(done.stderr)
  assert done.returncode == 2, done.stderr[-3000:]
  assert len(lines) == 1 and lines[0].startswith("error: "), lines
  for needle in needles:
    assert needle in lines[0], (needle, lines[0])
