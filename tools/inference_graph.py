"""The inference graph every export and tool runs: input `images`, outputs `logits` and `probabilities`.

`images` is uint8 [B, H, W, 3] RGB by default, scaled to [-1, 1] inside the graph exactly as in training
(input.preprocess.scale_input), or float32 already scaled (input_kind="float"). B is None (dynamic) or a fixed
batch size. The model is built with is_training=False (no dropout) in the requested compute dtype; logits and
probabilities are float32 whatever the precision (the head runs in float32, vit_raw/model.py).
"""
import collections

import numpy as np
import tensorflow.compat.v1 as tf

from vit_raw.model_input import scale_input
from vit_raw import model
from vit_raw import cpu_config

INPUT_NAME = "images"
OUTPUT_NAMES = ("logits", "probabilities")
PRECISIONS = ("float32", "float16", "bfloat16")
INPUT_KINDS = ("uint8", "float")

Endpoints = collections.namedtuple("Endpoints", ["images", "logits", "probabilities", "attentions"])
Endpoints.__doc__ = """Tensors of an inference graph.

Attributes:
  images: the input placeholder (named "images").
  logits: float32 [B, classes] (named "logits").
  probabilities: softmax of the logits (named "probabilities").
  attentions: per-layer attention probabilities [B, heads, T, T] float32 (only with return_attention), else None.
"""


def scale_uint8(images):
  """uint8 images -> float32 in [-1, 1], the NumPy twin of scale_input (for float-input models)."""
  return images.astype(np.float32) * np.float32(1.0 / 127.5) - np.float32(1.0)


def build(source, input_kind="uint8", batch_size=None, precision="float32", return_attention=False, scope="vit"):
  """Builds the inference graph of `source` (a tools.model_source.ModelSource) in the default graph.

  Variables are resource variables (what TF 2.x's SavedModel loader expects); load them with `load_weights`.
  """
  dtype = tf.as_dtype(precision)
  h, w = source.image_size
  if input_kind == "uint8":
    images = tf.placeholder(tf.uint8, [batch_size, h, w, 3], name=INPUT_NAME)
    x = scale_input(images, dtype)
  else:
    images = tf.placeholder(tf.float32, [batch_size, h, w, 3], name=INPUT_NAME)
    x = tf.cast(images, dtype) if dtype != tf.float32 else images
  with tf.variable_scope(tf.get_variable_scope(), use_resource=True):
    out = model.vit(x, source.config, source.num_classes, is_training=False,
                    representation_size=source.representation_size, compute_dtype=dtype,
                    return_attention=return_attention, scope=scope)
  logits, attentions = out if return_attention else (out, None)
  logits = tf.identity(logits, name=OUTPUT_NAMES[0])
  probabilities = tf.nn.softmax(logits, name=OUTPUT_NAMES[1])
  return Endpoints(images, logits, probabilities, attentions)


def load_weights(sess, values, scope="vit"):
  """Sets every model variable of the session's graph from {name under scope: array} by feeding the initial
  values of their initializers: no assign ops or placeholders are added to the graph, so it stays exportable."""
  head = scope.rstrip("/") + "/"
  feeds, inits = {}, []
  for var in sess.graph.get_collection(tf.GraphKeys.GLOBAL_VARIABLES):
    name = var.op.name[len(head):] if var.op.name.startswith(head) else None
    if name not in values:
      raise ValueError("no value for model variable %s" % var.op.name)
    inits.append(var.initializer)
    feeds[var.initializer.inputs[1]] = values[name].astype(var.dtype.base_dtype.as_numpy_dtype)
  sess.run(inits, feed_dict=feeds)


def session(graph):
  """A session with the trainer's CPU options (tools share vit_raw.cpu_config)."""
  return tf.Session(graph=graph, config=cpu_config.fast_cpu_config())


def run_batches(sess, fetch, images_tensor, images, batch_size=None):
  """sess.run(fetch) over `images` in chunks; a static batch size pads the last chunk (padding rows dropped)."""
  static = images_tensor.shape[0].value if hasattr(images_tensor.shape[0], "value") else images_tensor.shape[0]
  step = static or batch_size or len(images)
  rows = []
  for start in range(0, len(images), step):
    chunk = images[start:start + step]
    n = len(chunk)
    if static and n < static:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], static - n, axis=0)])
    rows.append(sess.run(fetch, {images_tensor: chunk})[:n])
  return np.concatenate(rows)


def freeze(sess, output_names=OUTPUT_NAMES):
  """Inference-only GraphDef of the session's graph: variables folded into constants, everything the outputs do
  not need removed, then grappler's pruning, constant folding, arithmetic and dependency passes (not its fused-op
  remapper: the graph keeps only public TensorFlow ops, which ATC, tf2onnx and TF Serving all know)."""
  graph_def = tf.graph_util.convert_variables_to_constants(sess, sess.graph.as_graph_def(), list(output_names))
  graph_def = tf.graph_util.remove_training_nodes(graph_def, protected_nodes=[INPUT_NAME] + list(output_names))
  return portable(_grappler(graph_def, output_names))


def portable(graph_def):
  """`graph_def` readable by TensorFlow 1.15 (and so by ATC) when written by TF 2.x: attributes left at their
  default values are dropped (how TF keeps graphs forward compatible; TF 2.x adds e.g. MatMul's grad_a/grad_b), and
  so is the `debug_name` label TF 2.x puts on VarHandleOp, which 1.15 does not know. Modifies and returns it."""
  from tensorflow.core.protobuf import meta_graph_pb2  # pylint: disable=g-import-not-at-top
  from tensorflow.python.framework import meta_graph  # pylint: disable=g-import-not-at-top
  meta = meta_graph_pb2.MetaGraphDef()
  meta.graph_def.CopyFrom(graph_def)
  meta_graph.strip_graph_default_valued_attrs(meta)
  for node in meta.graph_def.node:
    if "debug_name" in node.attr:
      del node.attr["debug_name"]
  graph_def.CopyFrom(meta.graph_def)
  return graph_def


def _grappler(graph_def, output_names):
  from tensorflow.core.protobuf import config_pb2  # pylint: disable=g-import-not-at-top
  from tensorflow.core.protobuf import meta_graph_pb2  # pylint: disable=g-import-not-at-top
  from tensorflow.python.grappler import tf_optimizer  # pylint: disable=g-import-not-at-top
  meta = meta_graph_pb2.MetaGraphDef()
  meta.graph_def.CopyFrom(graph_def)
  # Grappler keeps the nodes listed as fetches in the train_op collection.
  fetches = meta.collection_def["train_op"].node_list.value
  fetches.extend(list(output_names))
  config = config_pb2.ConfigProto()
  rewrite = config.graph_options.rewrite_options
  rewrite.optimizers.extend(["pruning", "constfold", "arithmetic", "dependency"])
  rewrite.meta_optimizer_iterations = 2
  with tf.Graph().as_default():
    return tf_optimizer.OptimizeGraph(config, meta)
