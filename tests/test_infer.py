"""tools.infer end to end: top-5 names, logits file equal to the NumPy reference, one-line errors with exit code 2."""
import os
import subprocess
import sys
import tempfile

import cv2
import numpy as np
import pytest

from tests import numpy_vit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ["cat", "dog", "bird", "fish", "frog", "horse", "ship", "truck", "plane", "deer"]


def _infer(*args):
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run([sys.executable, "-m", "tools.infer"] + list(args), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, universal_newlines=True, timeout=300)


@pytest.fixture(scope="module")
def workdir():
  """A Ti/16 checkpoint for 32x32 inputs with class_names.txt beside it, and three small images."""
  directory = tempfile.mkdtemp()
  params = numpy_vit.random_official_params(192, 12, 3, 768, 16, 1 + 2 * 2, 10, seed=0, scale=0.1)
  np.savez(os.path.join(directory, "ti16.npz"), **params)
  with open(os.path.join(directory, "class_names.txt"), "w") as f:
    f.write("\n".join(NAMES) + "\n")
  rng = np.random.RandomState(1)
  images = []
  for i, (h, w) in enumerate([(32, 32), (40, 24), (17, 50)]):
    path = os.path.join(directory, "img%d.png" % i)
    cv2.imwrite(path, rng.randint(0, 256, [h, w, 3]).astype(np.uint8))
    images.append(path)
  return directory, params, images


def _reference_inputs(paths, size=32):
  """Official eval preprocessing written out: RGB, bilinear resize, [-1, 1]."""
  out = []
  for path in paths:
    rgb = cv2.imread(path)[:, :, ::-1]
    out.append(cv2.resize(rgb, (size, size), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 127.5 - 1)
  return np.stack(out)


def test_prints_top5_names_and_writes_logits_equal_to_reference(workdir):
  directory, params, images = workdir
  out = os.path.join(directory, "logits.npy")
  result = _infer("--model", "ViT-Ti/16", "--image_size", "32", "--checkpoint", os.path.join(directory, "ti16.npz"),
                  "--num_classes", "10", "--out", out, *images)
  assert result.returncode == 0, result.stderr
  logits = np.load(out)
  assert logits.shape == (3, 10) and logits.dtype == np.float32
  expected = numpy_vit.forward(params, _reference_inputs(images), patch=16, num_heads=3)
  np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
  lines = [l for l in result.stdout.splitlines() if l.startswith(directory)]
  assert len(lines) == 3
  for path, line, row in zip(images, lines, logits):
    assert line.startswith(path + ": ")
    assert line.split(": ", 1)[1].split(" ")[0] == NAMES[int(np.argmax(row))]
    assert line.count(",") == 4  # five classes


def test_unreadable_image_is_one_line_exit_2(workdir):
  directory, _, images = workdir
  bad = os.path.join(directory, "broken.jpg")
  with open(bad, "w") as f:
    f.write("this is not a jpeg")
  result = _infer("--model", "Ti/16", "--image_size", "32", "--checkpoint", os.path.join(directory, "ti16.npz"),
                  images[0], bad)
  assert result.returncode == 2
  assert bad in result.stderr and "Traceback" not in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1


def test_bad_checkpoint_path_is_one_line_exit_2(workdir):
  _, _, images = workdir
  result = _infer("--model", "Ti/16", "--image_size", "32", "--checkpoint", "/nonexistent/model.npz", images[0])
  assert result.returncode == 2
  assert "/nonexistent/model.npz" in result.stderr and "Traceback" not in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1


def test_help_explains_every_flag():
  result = _infer("--helpfull")
  text = result.stdout + result.stderr
  for flag in ("--model", "--image_size", "--checkpoint", "--num_classes", "--out", "--batch_size", "--top_k"):
    assert flag in text, flag
