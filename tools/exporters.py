"""How a model is written in each deployment format and checked against its checkpoint.

pb: the inference graph frozen (tools/inference_graph.py: variables folded, grappler cleanup, TF 1.15-readable);
saved_model: the inference graph with its variables and a serving_default signature; onnx: the frozen graph through
tf2onnx; npz: the weights in the official layout (vit_raw/checkpoint_mapping.py). Each is written under a temporary
name,
loaded back from disk, run on probe images and compared with the checkpoint in a session before it is renamed into
place.
"""
import logging
import os

import numpy as np

from tools import command
from tools import model_source
from tools.command import UsageError

FORMATS = ("pb", "saved_model", "onnx", "npz")
EXTENSIONS = {"pb": ".pb", "onnx": ".onnx", "npz": ".npz"}
# Largest |logit difference| accepted, relative to the largest |logit| of the checkpoint (float32 exports).
TOLERANCE = {"pb": 1e-5, "saved_model": 1e-5, "npz": 1e-5, "onnx": 1e-4}
LOW_PRECISION_TOLERANCE = 1e-2  # float16/bfloat16 export vs the same precision in a session
PROBE_IMAGES = 4


def check_request(fmt, out, overwrite, precision):
  """UsageError for a missing/unknown format, a wrong extension, an existing --out or an unsupported precision."""
  if not fmt:
    raise UsageError("--format is required: one of %s" % ", ".join(FORMATS))
  ext = EXTENSIONS.get(fmt)
  if out and ext and os.path.splitext(out)[1].lower() != ext:
    raise UsageError("--out %s: --format %s writes a %s file (got extension %r)" %
                     (out, fmt, ext, os.path.splitext(out)[1] or "none"))
  if out and fmt == "saved_model" and os.path.splitext(out)[1].lower() in (".pb", ".onnx", ".npz"):
    raise UsageError("--out %s: --format saved_model writes a folder, not a %s file" % (out, os.path.splitext(out)[1]))
  command.check_out_path(out, overwrite)
  if precision != "float32" and fmt in ("onnx", "npz"):
    raise UsageError("--precision %s: --format %s is float32 only (use pb or saved_model for %s)" %
                     (precision, fmt, precision))


def probe_images(image_size, n=PROBE_IMAGES, seed=0):
  """Deterministic uint8 RGB noise images [n, H, W, 3] (the export check needs inputs, not meaning)."""
  return np.random.RandomState(seed).randint(0, 256, [n, image_size[0], image_size[1], 3]).astype(np.uint8)


def _shape_text(shape):
  return "[%s]" % ", ".join("N" if d is None else str(d) for d in shape)


def _write_graph_def(graph_def, path):
  with open(path, "wb") as f:
    f.write(graph_def.SerializeToString())


def _write_saved_model(sess, ends, path):
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  os.rmdir(path)  # the builder insists on creating the folder itself
  builder = tf.saved_model.builder.SavedModelBuilder(path)
  signature = tf.saved_model.signature_def_utils.predict_signature_def(
      inputs={"images": ends.images}, outputs={
          "logits": ends.logits,
          "probabilities": ends.probabilities
      })
  with sess.graph.as_default():
    builder.add_meta_graph_and_variables(sess, [tf.saved_model.tag_constants.SERVING],
                                         signature_def_map={"serving_default": signature}, strip_default_attrs=True,
                                         clear_devices=True)
  builder.save()
  # The builder already stripped default-valued attributes; `portable` also drops TF 2.x's VarHandleOp debug_name,
  # so that a SavedModel written on TF 2.x loads on TF 1.15.
  from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=g-import-not-at-top
  from tools import inference_graph  # pylint: disable=g-import-not-at-top
  proto_path = os.path.join(path, "saved_model.pb")
  saved = saved_model_pb2.SavedModel()
  with open(proto_path, "rb") as f:
    saved.ParseFromString(f.read())
  for meta in saved.meta_graphs:
    inference_graph.portable(meta.graph_def)
  with open(proto_path, "wb") as f:
    f.write(saved.SerializeToString())


def onnx_model(graph_def, opset=13):
  """ONNX ModelProto of a frozen inference GraphDef through tf2onnx, with inputs/outputs named as in TensorFlow."""
  try:
    import tf2onnx  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UsageError("--format onnx needs tf2onnx, which is not installed in this environment "
                     "(pip install -r requirements-*.txt)")
  logging.getLogger("tf2onnx").setLevel(logging.ERROR)
  rename = {"images:0": "images", "logits:0": "logits", "probabilities:0": "probabilities"}
  model_proto, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=["images:0"],
                                                  output_names=["logits:0", "probabilities:0"], opset=opset,
                                                  tensors_to_rename=rename)
  return model_proto


def _write_onnx(graph_def, path, opset):
  with open(path, "wb") as f:
    f.write(onnx_model(graph_def, opset).SerializeToString())


def _reload(fmt, path, source):
  """The runner of what was written at `path` (the temporary name), loaded from disk."""
  from tools import runtimes  # pylint: disable=g-import-not-at-top
  if fmt == "pb":
    return runtimes.graph_def_runner(runtimes.read_graph_def(path))
  if fmt == "saved_model":
    return runtimes.saved_model_runner(path)
  if fmt == "onnx":
    return runtimes.OnnxRunner(path)
  reread = model_source.from_checkpoint(path, source.config, source.image_size, source.num_classes)
  return runtimes.session_runner(reread)


def export(source, fmt, out, batch_size=None, input_kind="uint8", precision="float32", opset=13, log=print):
  """Writes `source` as `fmt` at `out` (checked, temporary name, renamed when verified); returns the report dict."""
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  from tools import inference_graph  # pylint: disable=g-import-not-at-top
  from tools import runtimes  # pylint: disable=g-import-not-at-top
  from vit_raw import checkpoint_mapping  # pylint: disable=g-import-not-at-top
  if batch_size is None:
    batch_size = 1 if fmt == "pb" else 0
  batch = batch_size or None
  graph = tf.Graph()
  with graph.as_default():
    ends = inference_graph.build(source, "uint8" if fmt == "npz" else input_kind, batch, precision)
  sess = inference_graph.session(graph)
  inference_graph.load_weights(sess, source.values)
  probes = probe_images(source.image_size)
  feed = probes if ends.images.dtype == tf.uint8 else inference_graph.scale_uint8(probes)
  reference = inference_graph.run_batches(sess, ends.logits, ends.images, feed)
  float32_reference = reference
  if precision != "float32":
    float32_runner = runtimes.session_runner(source)
    float32_reference = float32_runner.logits(probes)
    float32_runner.close()
  graph_def = inference_graph.freeze(sess) if fmt in ("pb", "onnx") else None
  with command.atomic_output(out, is_dir=fmt == "saved_model") as tmp:
    if fmt == "pb":
      _write_graph_def(graph_def, tmp)
    elif fmt == "saved_model":
      _write_saved_model(sess, ends, tmp)
    elif fmt == "onnx":
      _write_onnx(graph_def, tmp, opset)
    else:
      checkpoint_mapping.save_official_npz(source.values, source.config, tmp)
    runner = _reload(fmt, tmp, source)
    exported = runner.logits(probes)
    runner.close()
    scale = float(np.abs(reference).max()) or 1.0
    diff = float(np.abs(exported - reference).max())
    tolerance = TOLERANCE[fmt] if precision == "float32" else LOW_PRECISION_TOLERANCE
    if not diff <= tolerance * scale:
      raise RuntimeError("export check failed: %s logits differ from the checkpoint's by %.3g (max |logit| %.3g, "
                         "tolerance %.0e relative); nothing written" % (fmt, diff, scale, tolerance))
  sess.close()
  report = {
      "path": out,
      "format": fmt,
      "size_mb": command.size_mb(out),
      "max_abs_diff": diff,
      "max_abs_logit": scale,
      "tolerance": tolerance,
      "precision": precision,
      "float32_diff": float(np.abs(exported - float32_reference).max())
  }
  _print_report(report, fmt, source, ends, log)
  return report


def _print_report(report, fmt, source, ends, log):
  log("wrote %s (%s, %.2f MB)" % (report["path"], fmt, report["size_mb"]))
  if fmt == "npz":
    log("  weights of %s in the official layout (float32): load with --checkpoint or --init_checkpoint, or in the "
        "official code" % source.config.name)
  else:
    kind = "uint8 RGB 0..255, scaled to [-1, 1] inside" if ends.images.dtype.name == "uint8" else \
        "float32 RGB already scaled to [-1, 1]"
    log("  input  images %s %s (%s)" % (ends.images.dtype.name, _shape_text(ends.images.shape.as_list()), kind))
    for tensor in (ends.logits, ends.probabilities):
      log("  output %s float32 %s" % (tensor.op.name, _shape_text(tensor.shape.as_list())))
  line = "  checked on %d probe images: max |logit difference| %.3g vs the checkpoint in a session (max |logit| " \
         "%.3g, tolerance %.0e relative, %s)" % (PROBE_IMAGES, report["max_abs_diff"], report["max_abs_logit"],
                                                 report["tolerance"], report["precision"])
  if report["precision"] != "float32":
    line += "; %.3g vs float32" % report["float32_diff"]
  log(line)
