"""tools.export: every format gives the checkpoint's logits, the frozen graph is inference-only, SavedModels load on
the other stack, the official .npz loads back, and bad input is one line with nothing left at --out."""
import json
import os
import tempfile

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from tests import numpy_vit
from tests import tool_helpers
from tools import exporters
from tools import model_source
from tools import runtimes

FLOAT32_RTOL = {"pb": 1e-5, "saved_model": 1e-5, "npz": 1e-5, "onnx": 1e-4}
FILE_NAMES = {"pb": "vit.pb", "saved_model": "vit_saved_model", "onnx": "vit.onnx", "npz": "vit.npz"}


@pytest.fixture(scope="module")
def work():
  """A tiny model as an official .npz and as a run folder with a TF checkpoint of ours (same weights)."""
  directory = tempfile.mkdtemp()
  params = tool_helpers.tiny_params()
  npz = tool_helpers.write_npz(os.path.join(directory, "tiny.npz"), params)
  run = tool_helpers.write_run(os.path.join(directory, "run"), params)
  return {"dir": directory, "params": params, "npz": npz, "run": run}


def _assert_close(actual, expected, rtol):
  scale = float(np.abs(expected).max())
  assert scale > 0.5  # a non-trivial head, so equal logits mean equal models
  np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale)


def _quiet(*_):
  pass


@pytest.mark.parametrize("batch_size", [0, 3], ids=["dynamic", "static3"])
@pytest.mark.parametrize("fmt", exporters.FORMATS)
def test_exported_logits_equal_checkpoint_in_session(work, fmt, batch_size):
  if fmt == "onnx" and not tool_helpers.has_onnx():
    pytest.skip("tf2onnx/onnxruntime are not installed in this environment")
  source = model_source.from_run(work["run"])
  out = os.path.join(tempfile.mkdtemp(), FILE_NAMES[fmt])
  report = exporters.export(source, fmt, out, batch_size=batch_size, log=_quiet)
  images = tool_helpers.uint8_images(7)  # not the tool's own probe images; 7 is not a multiple of the batch
  reference = runtimes.session_runner(source)
  expected = reference.logits(images)
  reference.close()
  # The checkpoint in a session is the NumPy reference model, so "equal to the session" is "equal to the model".
  scaled = images.astype(np.float64) / 127.5 - 1
  _assert_close(expected, numpy_vit.forward(work["params"], scaled, patch=4, num_heads=2), 1e-5)
  if fmt == "npz":
    runner = runtimes.session_runner(model_source.from_checkpoint(out, "tiny", shape=tool_helpers.SHAPE))
  else:
    runner = runtimes.open_export(out)
    assert runner.batch_size == (batch_size or None)
  actual = runner.logits(images)
  runner.close()
  _assert_close(actual, expected, FLOAT32_RTOL[fmt])
  assert report["max_abs_diff"] <= FLOAT32_RTOL[fmt] * report["max_abs_logit"]
  assert not [n for n in os.listdir(os.path.dirname(out)) if n.startswith(".")]  # no temporary left


def test_float_input_export_takes_scaled_images(work):
  source = model_source.from_run(work["run"])
  out = os.path.join(tempfile.mkdtemp(), "vit.pb")
  exporters.export(source, "pb", out, batch_size=0, input_kind="float", log=_quiet)
  graph_def = runtimes.read_graph_def(out)
  placeholder = [n for n in graph_def.node if n.op == "Placeholder"][0]
  assert placeholder.attr["dtype"].type == tf.float32.as_datatype_enum
  images = tool_helpers.uint8_images(2)
  with tf.Graph().as_default() as graph:
    tf.import_graph_def(graph_def, name="")
    with tf.Session(graph=graph) as sess:
      logits = sess.run("logits:0", {"images:0": images.astype(np.float32) / 127.5 - 1})
  reference = runtimes.session_runner(source)
  _assert_close(logits, reference.logits(images), 1e-5)
  reference.close()


def test_frozen_pb_is_inference_only(work):
  out = os.path.join(tempfile.mkdtemp(), "vit.pb")
  exporters.export(model_source.from_run(work["run"]), "pb", out, batch_size=1, log=_quiet)
  graph_def = runtimes.read_graph_def(out)
  ops = {node.op for node in graph_def.node}
  banned = {
      "Variable", "VariableV2", "VarHandleOp", "ReadVariableOp", "Assign", "AssignVariableOp", "RandomUniform",
      "TruncatedNormal", "RandomStandardNormal", "SaveV2", "RestoreV2"
  }
  assert not ops & banned, ops & banned
  assert not [n.name for n in graph_def.node if "adam" in n.name.lower() or "dropout" in n.name.lower()]
  assert [n.name for n in graph_def.node if n.op in ("Placeholder", "PlaceholderWithDefault")] == ["images"]
  placeholder = [n for n in graph_def.node if n.name == "images"][0]
  assert [d.size for d in placeholder.attr["shape"].shape.dim] == [1, 8, 8, 3]
  assert {"logits", "probabilities"} <= {n.name for n in graph_def.node}


def test_npz_uses_official_names_and_loads_with_init_checkpoint(work):
  from vit_raw import checkpoint as vit_checkpoint  # pylint: disable=g-import-not-at-top
  from vit_raw import configs  # pylint: disable=g-import-not-at-top
  from vit_raw import model  # pylint: disable=g-import-not-at-top
  out = os.path.join(tempfile.mkdtemp(), "vit.npz")
  source = model_source.from_run(work["run"])
  exporters.export(source, "npz", out, log=_quiet)
  with np.load(out, allow_pickle=False) as npz:
    written = {k: npz[k] for k in npz.files}
  assert set(written) == set(work["params"])  # exactly the official original-layout names
  for key, value in work["params"].items():
    np.testing.assert_array_equal(written[key], value)
  # The trainer's --init_checkpoint path: init_from_checkpoint into a fresh model.
  config = configs.get_config("tiny", **tool_helpers.SHAPE)
  images = tool_helpers.uint8_images(3)
  x = tf.placeholder(tf.float32, [None, 8, 8, 3])
  logits = model.vit(x, config, 3, False)
  initializer = vit_checkpoint.init_from_checkpoint(out, config, 3, 8)
  with tf.Session() as sess:
    sess.run(tf.global_variables_initializer())
    initializer.init_fn(sess)
    got = sess.run(logits, {x: images / 127.5 - 1})
  assert not initializer.missing and not initializer.unused
  reference = runtimes.session_runner(source)
  _assert_close(got, reference.logits(images), 1e-5)
  reference.close()


_LOAD_WITH_TF2 = """
import json, sys
import numpy as np
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
images = np.load(sys.argv[2])
out = model.signatures["serving_default"](images=tf.constant(images))
print(json.dumps(out["logits"].numpy().tolist()))
"""

_LOAD_WITH_TF1 = """
import json, sys
import numpy as np
import tensorflow.compat.v1 as tf
tf.disable_v2_behavior()
with tf.Session(graph=tf.Graph()) as sess:
  meta = tf.saved_model.loader.load(sess, ["serve"], sys.argv[1])
  signature = meta.signature_def["serving_default"]
  logits = sess.run(signature.outputs["logits"].name, {signature.inputs["images"].name: np.load(sys.argv[2])})
print(json.dumps(logits.tolist()))
"""


def _other_stack_logits(python, saved_model, images_path):
  script = _LOAD_WITH_TF1 if tf.__version__.startswith("2.") else _LOAD_WITH_TF2
  done = tool_helpers.run_tool_script(python, script, saved_model, images_path)
  assert done.returncode == 0, done.stderr[-3000:]
  return np.array(json.loads(done.stdout.strip().splitlines()[-1]), np.float32)


def test_saved_model_loads_on_the_other_stack(work):
  python, reason = tool_helpers.other_stack_python()
  if python is None:
    pytest.skip(reason)
  directory = tempfile.mkdtemp()
  source = model_source.from_run(work["run"])
  images = tool_helpers.uint8_images(3)
  images_path = os.path.join(directory, "images.npy")
  np.save(images_path, images)
  reference = runtimes.session_runner(source)
  expected = reference.logits(images)
  reference.close()
  # Exported here, loaded there (TF 1.15 -> tf.saved_model.load of TF 2.x, or TF 2.x -> TF 1.15's loader).
  here = os.path.join(directory, "here")
  exporters.export(source, "saved_model", here, log=_quiet)
  _assert_close(_other_stack_logits(python, here, images_path), expected, 1e-5)
  # Exported there, loaded here.
  there = os.path.join(directory, "there")
  done = tool_helpers.run_tool("tools.export", "--model_dir", work["run"], "--format", "saved_model", "--out", there,
                               python=python)
  assert done.returncode == 0, done.stderr[-3000:]
  runner = runtimes.open_export(there)
  _assert_close(runner.logits(images), expected, 1e-5)
  runner.close()


def test_command_prints_what_it_wrote(work):
  out = os.path.join(tempfile.mkdtemp(), "vit.pb")
  done = tool_helpers.run_tool("tools.export", "--model_dir", work["run"], "--format", "pb", "--out", out,
                               "--batch_size", "2")
  assert done.returncode == 0, done.stderr[-3000:]
  text = done.stdout
  assert out in text and "(pb, " in text and " MB)" in text
  assert "input  images uint8 [2, 8, 8, 3]" in text
  assert "output logits float32 [2, 3]" in text and "output probabilities float32 [2, 3]" in text
  diff = float(text.split("max |logit difference| ")[1].split()[0])
  assert diff <= 1e-5 * 10
  assert os.path.isfile(out)


def test_bad_input_is_one_line_and_leaves_nothing(work):
  from vit_raw import configs  # pylint: disable=g-import-not-at-top
  directory = tempfile.mkdtemp()
  out = os.path.join(directory, "vit.pb")
  other = tool_helpers.write_npz(os.path.join(directory, "wide.npz"),
                                 numpy_vit.random_official_params(32, 2, 2, 32, 4, 5, 3, seed=1))
  base = ["--checkpoint", work["npz"]] + tool_helpers.MODEL_FLAGS
  cases = [
      # Another variant: names the key and both shapes.
      (["--checkpoint", other] + tool_helpers.MODEL_FLAGS + ["--format", "pb", "--out", out],
       ["wide.npz", "(32, 2, 16)", "(16, 2, 8)"]),
      # Another image size: both position-embedding shapes.
      (base + ["--image_size", "16", "--format", "pb", "--out", out], ["(1, 5, 16)", "(1, 17, 16)"]),
      (base + ["--format", "tflite", "--out", out], ["--format", "tflite"]),
      (base + ["--format", "onnx", "--out", out], ["--out", ".onnx", "'.pb'"]),
      (base + ["--format", "npz", "--precision", "bfloat16", "--out",
               os.path.join(directory, "x.npz")], ["--precision bfloat16", "npz"]),
      (["--model_dir", os.path.join(directory, "nothing_here"), "--format", "pb", "--out", out], ["nothing_here"]),
  ]
  assert configs.get_config("tiny", **tool_helpers.SHAPE).hidden_size == 16
  for args, needles in cases:
    done = tool_helpers.run_tool("tools.export", *args)
    tool_helpers.assert_usage_error(done, *needles)
    assert os.listdir(directory) == ["wide.npz"], (args, os.listdir(directory))
  # An existing output is not replaced without --overwrite.
  with open(out, "w") as f:
    f.write("keep me")
  done = tool_helpers.run_tool("tools.export", *(base + ["--format", "pb", "--out", out]))
  tool_helpers.assert_usage_error(done, out, "--overwrite")
  with open(out) as f:
    assert f.read() == "keep me"


def test_help_lists_every_flag():
  done = tool_helpers.run_tool("tools.export", "--help")
  text = done.stdout + done.stderr
  for name in ("format", "out", "overwrite", "batch_size", "input", "precision", "model_dir", "checkpoint", "model",
               "image_size", "num_classes", "opset", "resize_pos_embedding", "hidden_size"):
    assert "  --%s: " % name in text or "  --[no]%s: " % name in text, name
