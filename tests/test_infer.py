"""tools.infer end to end: logits equal to the NumPy reference for checkpoints, run folders and exports; folders and
list files; .npy/.json/.csv outputs; bad images skipped with a line; usage errors one line, exit 2, nothing at --out."""
import csv
import json
import os
import tempfile

import cv2
import numpy as np
import pytest

from tests import numpy_vit
from tests import tool_helpers

NAMES = ["cat", "dog", "bird", "fish", "frog", "horse", "ship", "truck", "plane", "deer"]


def _infer(*args):
  return tool_helpers.run_tool("tools.infer", *args)


@pytest.fixture(scope="module")
def workdir():
  """A Ti/16 checkpoint for 32x32 inputs with class_names.txt beside it, three small images, a tiny run folder."""
  directory = tempfile.mkdtemp()
  params = numpy_vit.random_official_params(192, 12, 3, 768, 16, 1 + 2 * 2, 10, seed=0, scale=0.1)
  np.savez(os.path.join(directory, "ti16.npz"), **params)
  with open(os.path.join(directory, "class_names.txt"), "w") as f:
    f.write("\n".join(NAMES) + "\n")
  rng = np.random.RandomState(1)
  images = []
  os.makedirs(os.path.join(directory, "photos", "nested"))
  for i, (h, w) in enumerate([(32, 32), (40, 24), (17, 50)]):
    path = os.path.join(directory, "photos", "nested" if i == 2 else "", "img%d.png" % i)
    cv2.imwrite(path, rng.randint(0, 256, [h, w, 3]).astype(np.uint8))
    images.append(path)
  tiny = tool_helpers.tiny_params()
  run = tool_helpers.write_run(os.path.join(directory, "run"), tiny)
  return {"dir": directory, "params": params, "images": images, "run": run, "tiny": tiny}


def _reference_inputs(paths, size):
  """The evaluation preprocessing written out: RGB, resize (area when shrinking 2x or more both ways, else
  bilinear, as the input pipeline), [-1, 1]."""
  out = []
  for path in paths:
    rgb = cv2.imread(path)[:, :, ::-1]
    shrink = rgb.shape[0] >= 2 * size and rgb.shape[1] >= 2 * size
    resized = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    out.append(resized.astype(np.float64) / 127.5 - 1)
  return np.stack(out)


def _printed(stdout, prefix):
  return [line for line in stdout.splitlines() if line.startswith(prefix)]


def test_checkpoint_logits_equal_reference_and_top5_names(workdir):
  out = os.path.join(tempfile.mkdtemp(), "logits.npy")
  images = workdir["images"]
  result = _infer("--model", "ViT-Ti/16", "--image_size", "32", "--checkpoint",
                  os.path.join(workdir["dir"],
                               "ti16.npz"), "--num_classes", "10", "--batch_size", "2", "--out", out, *images)
  assert result.returncode == 0, result.stderr
  logits = np.load(out)
  assert logits.shape == (3, 10) and logits.dtype == np.float32
  expected = numpy_vit.forward(workdir["params"], _reference_inputs(images, 32), patch=16, num_heads=3)
  np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
  lines = _printed(result.stdout, workdir["dir"])
  assert len(lines) == 3
  for path, line, row in zip(images, lines, logits):
    assert line.startswith(path + ": ")
    assert line.split(": ", 1)[1].split(" ")[0] == NAMES[int(np.argmax(row))]
    assert line.count(",") == 4  # five classes


def test_run_folder_folder_argument_and_list_file(workdir):
  """--model_dir of a tiny shape-overridden run; a folder is searched recursively, a list file is read."""
  directory = tempfile.mkdtemp()
  listed = os.path.join(directory, "list.txt")
  with open(listed, "w") as f:
    f.write("# images\n%s 3\n" % os.path.relpath(workdir["images"][1], directory))
  out = os.path.join(directory, "out.json")
  result = _infer("--model_dir", workdir["run"], "--top_k", "2", "--out", out, os.path.join(workdir["dir"], "photos"),
                  listed)
  assert result.returncode == 0, result.stderr
  order = sorted(workdir["images"][:2]) + [workdir["images"][2], workdir["images"][1]]
  with open(out) as f:
    items = json.load(f)
  assert [item["path"] for item in items] == order
  expected = numpy_vit.forward(workdir["tiny"], _reference_inputs(order, 8), patch=4, num_heads=2)
  got = np.array([item["logits"] for item in items])
  np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
  for item, row in zip(items, expected):
    assert [c["class"] for c in item["top_k"]] == list(np.argsort(-row)[:2])
    assert item["top_k"][0]["name"] == tool_helpers.CLASS_NAMES[int(np.argmax(row))]


def test_hflip_averages_each_images_softmax_with_its_mirror_images(workdir):
  directory = tempfile.mkdtemp()
  out, plain_out = os.path.join(directory, "flip.npy"), os.path.join(directory, "plain.npy")
  images = workdir["images"]
  flipped = _infer("--model_dir", workdir["run"], "--hflip", "--out", out, *images)
  plain = _infer("--model_dir", workdir["run"], "--out", plain_out, *images)
  assert flipped.returncode == 0 and plain.returncode == 0, flipped.stderr + plain.stderr
  reference = _reference_inputs(images, 8)
  forward = lambda x: numpy_vit.forward(workdir["tiny"], x, patch=4, num_heads=2)

  def probabilities(logits):
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)

  expected = 0.5 * (probabilities(forward(reference)) + probabilities(forward(reference[:, :, ::-1])))
  np.testing.assert_allclose(np.exp(np.load(out)), expected, rtol=0, atol=1e-5)
  assert not np.allclose(probabilities(np.load(plain_out)), expected, rtol=0, atol=1e-3)  # the mirror mattered
  top = [line.split(": ", 1)[1].split(" ") for line in _printed(flipped.stdout, workdir["dir"])]
  assert [float(t[1].rstrip(",")) for t in top] == pytest.approx(expected.max(1), abs=1e-4)


@pytest.mark.parametrize("fmt", ["pb", "onnx"])
def test_exported_model_gives_the_checkpoint_results(workdir, fmt):
  if fmt == "onnx":
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
  directory = tempfile.mkdtemp()
  model_path = os.path.join(directory, "vit." + fmt)
  done = tool_helpers.run_tool("tools.export", "--model_dir", workdir["run"], "--format", fmt, "--out", model_path,
                               "--batch_size", "2")
  assert done.returncode == 0, done.stderr[-2000:]
  out = os.path.join(directory, "out.csv")
  result = _infer("--checkpoint", model_path, "--out", out, *workdir["images"])
  assert result.returncode == 0, result.stderr
  expected = numpy_vit.forward(workdir["tiny"], _reference_inputs(workdir["images"], 8), patch=4, num_heads=2)
  probs = np.exp(expected - expected.max(1, keepdims=True))
  probs /= probs.sum(1, keepdims=True)
  with open(out) as f:
    rows = list(csv.DictReader(f))
  assert [r["path"] for r in rows] == workdir["images"]
  for row, p in zip(rows, probs):
    assert int(row["class_1"]) == int(np.argmax(p))
    assert abs(float(row["probability_1"]) - p.max()) < 1e-4
    assert row["name_1"] == "class %d" % int(np.argmax(p))  # no class_names.txt beside the export
  assert "no class_names.txt" in result.stderr and "printing class ids" in result.stderr


def _truncated_jpeg(path):
  ok, data = cv2.imencode(".jpg", np.random.RandomState(2).randint(0, 256, [64, 64, 3]).astype(np.uint8))
  assert ok
  with open(path, "wb") as f:
    f.write(data.tobytes()[:len(data) // 2])


def _huge_header_jpeg(path):
  """A small valid JPEG whose start-of-frame header is patched to declare 60000x60000 pixels."""
  ok, data = cv2.imencode(".jpg", np.zeros([16, 16, 3], np.uint8))
  data = bytearray(data.tobytes())
  sof = data.index(b"\xff\xc0")
  data[sof + 5:sof + 9] = (60000).to_bytes(2, "big") + (60000).to_bytes(2, "big")
  with open(path, "wb") as f:
    f.write(bytes(data))


def test_undecodable_images_are_skipped_with_a_line(workdir):
  directory = tempfile.mkdtemp()
  bad = {
      "text.jpg": lambda p: open(p, "w").write("this is not a jpeg"),
      "truncated.jpg": _truncated_jpeg,
      "huge.jpg": _huge_header_jpeg,
      "empty.png": lambda p: open(p, "w").close()
  }
  for name, make in bad.items():
    make(os.path.join(directory, name))
  out = os.path.join(directory, "logits.npy")
  result = _infer("--model_dir", workdir["run"], "--out", out, workdir["images"][0], directory,
                  os.path.join(directory, "missing.png"))
  assert result.returncode == 0, result.stderr
  assert "Traceback" not in result.stderr
  lines = tool_helpers.error_lines(result.stderr)
  for name in list(bad) + ["missing.png"]:
    matching = [line for line in lines if os.path.join(directory, name) in line]
    assert len(matching) == 1 and matching[0].startswith("skipped "), (name, lines)
  assert "does not exist" in [line for line in lines if "missing.png" in line][0]
  assert "truncated" in [line for line in lines if "truncated.jpg" in line][0]
  assert "60000x60000" in [line for line in lines if "huge.jpg" in line][0]
  assert len(_printed(result.stdout, workdir["images"][0])) == 1
  assert np.load(out).shape == (1, 3)


def test_usage_errors_are_one_line_exit_2_and_write_nothing(workdir):
  directory = tempfile.mkdtemp()
  image = workdir["images"][0]
  npz = os.path.join(workdir["dir"], "ti16.npz")
  out = os.path.join(directory, "out.npy")
  cases = [
      (["--model", "Ti/16", "--image_size", "32", "--checkpoint", "/nonexistent/model.npz",
        image], ["/nonexistent/model.npz"]),
      # Another variant: one line with both shapes.
      (["--model", "ViT-S/16", "--image_size", "32", "--checkpoint", npz, "--out", out,
        image], ["ti16.npz", "(192, 3, 64)", "(384, 6, 64)"]),
      # Another image size: both position-embedding shapes.
      (["--model", "Ti/16", "--image_size", "64", "--checkpoint", npz, "--out", out,
        image], ["(1, 5, 192)", "(1, 17, 192)"]),
      (["--model_dir", workdir["run"], "--out",
        os.path.join(directory, "out.txt"), image], ["out.txt", ".json"]),
      (["--model_dir", workdir["run"], "--model", "tiny", image], ["--model"]),
      (["--model_dir", workdir["run"], "--top_k", "three", image], ["top_k"]),
      (["--model_dir", workdir["run"], os.path.join(directory, "missing.png")], ["missing.png does not exist"]),
      (["--checkpoint", image, image], ["unknown model file extension", "'.png'"]),
  ]
  for args, needles in cases:
    tool_helpers.assert_usage_error(_infer(*args), *needles)
    assert os.listdir(directory) == [], (args, os.listdir(directory))
  with open(out, "w") as f:
    f.write("keep")
  tool_helpers.assert_usage_error(_infer("--model_dir", workdir["run"], "--out", out, image), out, "--overwrite")
  with open(out) as f:
    assert f.read() == "keep"


def test_help_explains_every_flag():
  result = _infer("--help")
  text = result.stdout + result.stderr
  for name in ("model_dir", "checkpoint", "model", "image_size", "num_classes", "class_names", "out", "overwrite",
               "batch_size", "top_k", "precision", "resize_pos_embedding"):
    assert "  --%s: " % name in text or "  --[no]%s: " % name in text, name
