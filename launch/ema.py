"""The weights' exponential moving average (EMA): shadow variables updated in the graph after every step.

shadow <- d * shadow + (1 - d) * weight after each update, with d = min(decay, (1 + n) / (10 + n)) at global step n
(TensorFlow's ExponentialMovingAverage num_updates rule, n counted after the update, so a short run's average is not
stuck near the initial weights). The update is a step hook, so it runs inside the in-graph N-step loop too, and
the shadows are global variables named ema/<weight name>: checkpoints hold them, a resumed run restores them, and
tools.export / tools.infer use them when a checkpoint has them. Evaluation reports the shadows as the view "ema"
(ema_top1) in the same pass as the trained weights.
"""
import tensorflow.compat.v1 as tf

from launch import callbacks

SCOPE = "ema"


def shadow_name(weight_name):
  """The checkpoint name of a weight's moving average."""
  return "%s/%s" % (SCOPE, weight_name)


class WeightAverage(callbacks.Callback):
  """Keeps the EMA of every trainable weight and adds the view "ema" to the evaluation.

  Attributes:
    decay: the decay (0 < decay < 1).
    shadows: {weight variable: shadow variable}, made by the first step hook.
  """

  def __init__(self, decay):
    self.decay = float(decay)
    self.shadows = {}
    self._weights = []

  def step_hooks(self, plan):
    return [self._update]

  def _make_shadows(self):
    with tf.init_scope():
      self._weights = [v for v in tf.trainable_variables() if not v.op.name.startswith(SCOPE + "/")]
      for v in self._weights:
        self.shadows[v] = tf.get_variable(shadow_name(v.op.name), dtype=v.dtype.base_dtype, initializer=v.initial_value,
                                          trainable=False, use_resource=True)

  def _update(self, update):
    if not self.shadows:
      self._make_shadows()
    with tf.control_dependencies([update]):  # the step after this update, and the weights it wrote
      step = tf.cast(tf.train.get_global_step().read_value(), tf.float32)
      decay = tf.minimum(self.decay, (1.0 + step) / (10.0 + step))
      ops = [
          shadow.assign(decay * shadow.read_value() + (1.0 - decay) * weight.read_value(), read_value=False)
          for weight, shadow in self.shadows.items()
      ]
    return tf.group(*ops)

  def setup_graph(self, ctx):
    if not self.shadows:  # --mode=eval: no training step was built, the shadows come from the checkpoint
      self._make_shadows()
    by_name = {v.op.name: s for v, s in self.shadows.items()}

    def averaged(getter, name, *args, **kwargs):
      var = getter(name, *args, **kwargs)
      return by_name[var.op.name].read_value() if var.op.name in by_name else var

    def logits(images):
      with tf.variable_scope(tf.get_variable_scope(), custom_getter=averaged, reuse=True):
        return ctx.model_fn(images, False)

    ctx.eval_views["ema"] = logits
