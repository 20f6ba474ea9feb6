"""One interface over every way a model can run: a checkpoint in a session, a frozen .pb, a SavedModel, ONNX Runtime.

Each runner takes uint8 RGB images [n, H, W, 3] at its `image_size`, whatever its input kind (a float-input export
gets them scaled to [-1, 1] here), and returns float32 logits [n, classes]. A runner with a static batch size pads
the last chunk. `open_export(path)` picks the runner of an exported model by its extension.
"""
import os

import numpy as np

from tools.command import UsageError
from tools import inference_graph

EXPORT_KINDS = {".pb": "pb", ".onnx": "onnx"}


def export_kind(path):
  """"pb", "onnx" or "saved_model" for an exported model path, None for anything else (e.g. a checkpoint)."""
  if os.path.isdir(path) and os.path.isfile(os.path.join(path, "saved_model.pb")):
    return "saved_model"
  return EXPORT_KINDS.get(os.path.splitext(path)[1].lower()) if os.path.isfile(path) else None


class Runner(object):
  """Base of the runners.

  Attributes:
    name: what runs it, for printing ("frozen pb", "ONNX Runtime 1.10.0", ...).
    image_size: (height, width) the model takes.
    input_dtype: np.uint8 or np.float32 (float inputs are already in [-1, 1]).
    batch_size: the static batch size, or None for any.
    num_classes: width of the logits.
  """
  name = ""
  image_size = None
  input_dtype = np.uint8
  batch_size = None
  num_classes = None

  def _run(self, images):
    raise NotImplementedError

  def logits(self, images, chunk=32):
    """float32 logits [n, classes] of uint8 images [n, H, W, 3]."""
    if self.input_dtype != np.uint8:
      images = inference_graph.scale_uint8(images)
    step = self.batch_size or chunk
    rows = []
    for start in range(0, len(images), step):
      part = images[start:start + step]
      n = len(part)
      if self.batch_size and n < self.batch_size:
        part = np.concatenate([part, np.repeat(part[-1:], self.batch_size - n, axis=0)])
      rows.append(np.asarray(self._run(part), np.float32)[:n])
    return np.concatenate(rows) if rows else np.zeros([0, self.num_classes or 0], np.float32)

  def close(self):
    pass


def _size_of(shape):
  """(batch or None, (height, width)) of a [B, H, W, 3] shape given as a list of ints/None."""
  dims = [None if d is None or d < 0 else int(d) for d in shape]
  return dims[0], (dims[1], dims[2])


class _GraphRunner(Runner):
  """A TF graph in its own session, fed through `images` and fetching `logits`."""

  def __init__(self, graph, sess, images, logits):
    self.graph, self.sess, self.images, self.logits_tensor = graph, sess, images, logits
    self.batch_size, self.image_size = _size_of(images.shape.as_list())
    self.input_dtype = np.uint8 if images.dtype.base_dtype.name == "uint8" else np.float32
    self.num_classes = logits.shape.as_list()[-1]

  def _run(self, images):
    return self.sess.run(self.logits_tensor, {self.images: images})

  def close(self):
    self.sess.close()


def session_runner(source, precision="float32", input_kind="uint8", batch_size=None):
  """The checkpoint of a ModelSource in a session (the reference every export is compared against)."""
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  graph = tf.Graph()
  with graph.as_default():
    ends = inference_graph.build(source, input_kind, batch_size, precision)
  sess = inference_graph.session(graph)
  inference_graph.load_weights(sess, source.values)
  runner = _GraphRunner(graph, sess, ends.images, ends.logits)
  runner.name = "checkpoint in a session (%s)" % precision
  return runner


def graph_def_runner(graph_def, name="frozen pb"):
  """A frozen GraphDef (input `images`, output `logits`) in a session."""
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  graph = tf.Graph()
  with graph.as_default():
    tf.import_graph_def(graph_def, name="")
  sess = inference_graph.session(graph)
  runner = _GraphRunner(graph, sess, graph.get_tensor_by_name("images:0"), graph.get_tensor_by_name("logits:0"))
  runner.name = name
  return runner


def read_graph_def(path):
  """GraphDef of a frozen .pb; UsageError with one line when it is not one."""
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  graph_def = tf.GraphDef()
  try:
    with open(path, "rb") as f:
      graph_def.ParseFromString(f.read())
  except Exception as e:  # pylint: disable=broad-except
    raise UsageError("%s is not a frozen TensorFlow GraphDef (.pb): %s" % (path, str(e).splitlines()[0]))
  names = {node.name for node in graph_def.node}
  if not {"images", "logits"} <= names:
    raise UsageError("%s has no 'images' input or 'logits' output node: not an export of tools.export" % path)
  return graph_def


def saved_model_runner(path):
  """A SavedModel's serving_default signature in a TF1-style session (works on both stacks)."""
  import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
  graph = tf.Graph()
  sess = inference_graph.session(graph)
  with graph.as_default():
    try:
      meta = tf.saved_model.loader.load(sess, [tf.saved_model.tag_constants.SERVING], path)
    except Exception as e:  # pylint: disable=broad-except
      raise UsageError("%s is not a loadable SavedModel: %s" % (path, str(e).strip().splitlines()[0]))
  signature = meta.signature_def.get("serving_default")
  if signature is None or "images" not in signature.inputs or "logits" not in signature.outputs:
    raise UsageError("%s has no serving_default signature with 'images' -> 'logits'" % path)
  images = graph.get_tensor_by_name(signature.inputs["images"].name)
  logits = graph.get_tensor_by_name(signature.outputs["logits"].name)
  runner = _GraphRunner(graph, sess, images, logits)
  runner.name = "SavedModel"
  return runner


class OnnxRunner(Runner):
  """An ONNX model in ONNX Runtime's CPU provider."""

  def __init__(self, model_bytes_or_path, threads=None):
    try:
      import onnxruntime  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise UsageError("onnxruntime is not installed in this environment (pip install -r requirements-*.txt)")
    options = onnxruntime.SessionOptions()
    if threads:
      options.intra_op_num_threads = threads
    try:
      self.session = onnxruntime.InferenceSession(model_bytes_or_path, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # pylint: disable=broad-except
      where = model_bytes_or_path if isinstance(model_bytes_or_path, str) else "the ONNX model"
      raise UsageError("%s cannot be loaded by ONNX Runtime: %s" % (where, str(e).strip().splitlines()[0]))
    inputs = {i.name: i for i in self.session.get_inputs()}
    outputs = [o.name for o in self.session.get_outputs()]
    if "images" not in inputs or "logits" not in outputs:
      raise UsageError("ONNX model has inputs %s and outputs %s; expected 'images' -> 'logits'" %
                       (sorted(inputs), outputs))
    shape = [d if isinstance(d, int) else None for d in inputs["images"].shape]
    self.batch_size, self.image_size = _size_of(shape)
    self.input_dtype = np.uint8 if inputs["images"].type == "tensor(uint8)" else np.float32
    self.num_classes = self.session.get_outputs()[outputs.index("logits")].shape[-1]
    self.name = "ONNX Runtime %s" % onnxruntime.__version__

  def _run(self, images):
    return self.session.run(["logits"], {"images": images})[0]


def open_export(path):
  """The runner of an exported model (.pb, SavedModel folder, .onnx); UsageError for anything else."""
  kind = export_kind(path)
  if kind == "pb":
    return graph_def_runner(read_graph_def(path))
  if kind == "saved_model":
    return saved_model_runner(path)
  if kind == "onnx":
    return OnnxRunner(path)
  raise UsageError("%s is not an exported model: expected a .pb file, a .onnx file or a SavedModel folder" % path)
