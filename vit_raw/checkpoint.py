"""Checkpoints into and out of a TensorFlow graph: reading our TF checkpoints, loading a checkpoint (official .npz
or ours) into the model variables of a graph, and writing a session's weights as an official .npz.

How the names and shapes map, and how a checkpoint is fitted to a model, is vit_raw/checkpoint_mapping.py (NumPy
only); this module adds what needs TensorFlow.
"""
import collections
import os
import zipfile

import tensorflow.compat.v1 as tf

from vit_raw import checkpoint_mapping
from vit_raw import configs
from vit_raw import parameters
from vit_raw.errors import ModelError

Initializer = collections.namedtuple("Initializer", ["init_fn", "report", "message", "missing", "unused"])
Initializer.__doc__ = """Loading a checkpoint into the model variables of a graph (init_from_checkpoint).

Attributes:
  init_fn: fn(sess) that assigns the checkpoint's values (after the variables are initialised).
  report: lines saying what loading does (tensors loaded, head re-initialised, position embeddings resized, keys
    unused or missing), for the caller to log.
  message: the report in one line.
  missing: sorted model variables (names relative to the scope) the checkpoint does not give; they keep their
    initial values (a fresh zero head for a new class count).
  unused: sorted checkpoint keys not loaded.
"""


def _is_npz(path):
  return os.path.isfile(path) and zipfile.is_zipfile(path)


def tf_prefix(path):
  """The checkpoint prefix for a directory or prefix path, or None if `path` is not a TF checkpoint."""
  if os.path.isdir(path):
    return tf.train.latest_checkpoint(path)
  if tf.io.gfile.exists(path + ".index"):
    return path
  return None


def read_tf_checkpoint(prefix, scope="vit"):
  """{our name: array} of the model variables under `scope` in a TF checkpoint (optimizer slots left out)."""
  try:
    reader = tf.train.load_checkpoint(prefix)
    shapes = reader.get_variable_to_shape_map()
  except Exception as e:  # pylint: disable=broad-except
    raise ModelError("%s is not a readable TensorFlow checkpoint (%s)" % (prefix, str(e).splitlines()[0]))
  head = scope.rstrip("/") + "/"
  out = {}
  for name in shapes:
    if name.startswith(head) and name.split("/")[-1] in parameters.WEIGHT_LEAVES:
      try:
        out[name[len(head):]] = reader.get_tensor(name)
      except Exception as e:  # pylint: disable=broad-except
        # A data file cut short or damaged after its index was written: an OpError on TF 1.15, on TF 2.x what its
        # pybind layer makes of the status (IndexError for "Read less bytes than requested").
        raise ModelError("TensorFlow checkpoint %s cannot be read: tensor %s: %s" %
                         (prefix, name, str(e).splitlines()[0] if str(e) else type(e).__name__))
  if not out:
    raise ModelError("TensorFlow checkpoint %s holds no variables under scope %r (found e.g. %s)" %
                     (prefix, scope, ", ".join(sorted(shapes)[:3]) or "nothing"))
  return out


def read_checkpoint(path, config, scope="vit"):
  """Reads an official .npz (either naming) or a TF checkpoint of ours; returns ({our name: array}, unused names)."""
  if not path or not (os.path.exists(path) or tf.io.gfile.exists(path + ".index")):
    raise ModelError("checkpoint %s does not exist; expected an official .npz file or a TensorFlow checkpoint "
                     "(prefix or directory)" % path)
  if _is_npz(path):
    return checkpoint_mapping.read_official_npz(path, config)
  prefix = tf_prefix(path)
  if prefix is None:
    raise ModelError("%s is neither a valid .npz checkpoint nor a TensorFlow checkpoint (prefix or directory)" % path)
  return read_tf_checkpoint(prefix, scope), []


def _model_variables(scope):
  """{our name: variable} of the model weights under `scope` (optimizer slots such as .../kernel/Adam left out)."""
  head = scope.rstrip("/") + "/"
  return {
      v.op.name[len(head):]: v
      for v in tf.global_variables()
      if v.op.name.startswith(head) and v.op.name.split("/")[-1] in parameters.WEIGHT_LEAVES
  }


def init_from_checkpoint(path, config, num_classes, image_size, keep_pre_logits=False, scope="vit"):
  """Prepares loading `path` into the model variables of the default graph; returns an Initializer.

  The file is read and checked now (ValueError with one line on any problem); init_fn(sess) feeds the arrays
  through placeholders (no large graph constants). Missing model variables keep their initial values (a fresh zero
  head for a new class count).
  """
  config = configs.get_config(config)
  variables = _model_variables(scope)
  if not variables:
    raise ModelError("no model variables under scope %r in the default graph; build the model before "
                     "init_from_checkpoint" % scope)
  head = variables.get("head/kernel")
  if head is not None and int(head.shape[-1]) != num_classes:
    raise ModelError("model head has %d classes but num_classes=%d" % (int(head.shape[-1]), num_classes))
  values, unused_file = read_checkpoint(path, config, scope)
  shapes = {name: tuple(v.shape.as_list()) for name, v in variables.items()}
  fit = checkpoint_mapping.fit_to_model(values, shapes, config, image_size, keep_pre_logits)
  unused = sorted(fit.unused + unused_file)
  feeds, ops = {}, []
  with tf.name_scope("init_from_checkpoint"):
    for name, value in sorted(fit.values.items()):
      var = variables[name]
      placeholder = tf.placeholder(var.dtype.base_dtype, var.shape, name=name.replace("/", "_"))
      ops.append(tf.assign(var, placeholder))
      feeds[placeholder] = value.astype(var.dtype.base_dtype.as_numpy_dtype)
    # Re-zero a head that was dropped, in case the variables were already changed after initialisation.
    for name in ("head/kernel", "head/bias"):
      if name in fit.missing and name in variables:
        ops.append(tf.assign(variables[name], tf.zeros_like(variables[name])))
  report = _load_report(path, fit, unused, len(shapes))

  def init_fn(sess):
    sess.run(ops, feed_dict=feeds)

  return Initializer(init_fn, report, "; ".join(report), fit.missing, unused)


def _summary(names, limit=12):
  shown = ", ".join(names[:limit])
  return shown + (" ... (%d more)" % (len(names) - limit) if len(names) > limit else "")


def _load_report(path, fit, unused, num_tensors):
  """Lines that say what loading `path` into a model of `num_tensors` variables does."""
  report = ["checkpoint %s: %d of the model's %d tensors loaded" % (path, len(fit.values), num_tensors)]
  if fit.new_head:
    report.append("head re-initialised to zeros (%d -> %d classes)" % fit.new_head)
  if fit.pos_grids:
    report.append("position embeddings resized (%s -> %s grid)" % fit.pos_grids)
  if unused:
    report.append("unused checkpoint keys: %s" % _summary(unused))
  fresh = [name for name in fit.missing if not name.startswith("head/")]
  if fresh:
    report.append("model tensors not in the checkpoint (fresh init): %s" % _summary(fresh))
  return report


def model_values(sess, scope="vit"):
  """{our name: array} of the model variables in `sess`."""
  variables = _model_variables(scope)
  names = sorted(variables)
  return dict(zip(names, sess.run([variables[n] for n in names])))


def export_npz(sess, config, path, scope="vit"):
  """Writes the model variables of `sess` as an official original-layout .npz."""
  return checkpoint_mapping.save_official_npz(model_values(sess, scope), config, path)
