"""Loss scaling for float16 training on CPU/GPU, written in the graph (the NPU uses npu_bridge's own, see npu.py).

Semantics (the same as NPULossScaleOptimizer with ExponentialUpdateLossScaleManager(decr_every_n_nan_or_inf=1,
decr_ratio=0.5) and FixedLossScaleManager):
  * the loss is multiplied by the scale before differentiation and the gradients are divided by it;
  * a step whose gradients hold inf/NaN is skipped: no model variable, optimizer slot or Adam power changes;
  * dynamic: a skipped step halves the scale (never below 1); `growth_steps` finite steps in a row double it;
  * fixed: the scale never changes, overflowing steps are still skipped.
The global step is NOT part of the skip: it counts batches consumed (so the schedule, the epoch count and the data
position on resume stay exact); the number of skipped steps is its own counter, logged and checkpointed.
"""
import tensorflow.compat.v1 as tf


class LossScale(object):
  """The loss-scale state as variables (checkpointed with the model).

  Attributes:
    mode: "dynamic", "fixed" or "off".
    scale: float32 variable holding the current scale (1 when off).
    good_steps: int64 variable, finite steps since the last change of the scale.
    skipped: int64 variable, overflowing steps skipped so far.
    growth_steps: finite steps after which a dynamic scale doubles.
  """

  def __init__(self, mode, initial_scale=2.0**15, growth_steps=1000):
    if mode not in ("dynamic", "fixed", "off"):
      raise ValueError("loss scale mode must be dynamic, fixed or off, got %r" % mode)
    self.mode = mode
    self.growth_steps = int(growth_steps)
    initial = 1.0 if mode == "off" else float(initial_scale)
    with tf.variable_scope("loss_scale", use_resource=True):
      self.scale = tf.get_variable("scale", [], tf.float32, tf.constant_initializer(initial), trainable=False)
      self.good_steps = tf.get_variable("good_steps", [], tf.int64, tf.zeros_initializer(), trainable=False)
      self.skipped = tf.get_variable("skipped", [], tf.int64, tf.zeros_initializer(), trainable=False)

  @property
  def enabled(self):
    return self.mode != "off"

  def scale_loss(self, loss, scale):
    """loss * scale; `scale` is this step's read of self.scale (read once per step so every use agrees)."""
    return loss * scale if self.enabled else loss

  def unscale(self, grads, scale):
    """Divides the gradients by `scale` (None gradients stay None)."""
    if not self.enabled:
      return grads
    inv = 1.0 / scale
    return [None if g is None else g * tf.cast(inv, g.dtype) for g in grads]

  def update(self, finite):
    """Returns the op that moves the state after a step whose gradients were `finite` (a bool tensor)."""
    skipped = self.skipped.assign_add(tf.cast(tf.logical_not(finite), tf.int64), read_value=False)
    if self.mode != "dynamic":
      return skipped
    good = self.good_steps.read_value()
    scale = self.scale.read_value()
    grow = tf.logical_and(finite, good + 1 >= self.growth_steps)
    new_scale = tf.where(finite, tf.where(grow, scale * 2.0, scale), tf.maximum(scale * 0.5, 1.0))
    new_good = tf.where(tf.logical_and(finite, tf.logical_not(grow)), good + 1, tf.zeros_like(good))
    return tf.group(skipped, self.scale.assign(new_scale, read_value=False),
                    self.good_steps.assign(new_good, read_value=False))


def all_finite(grads):
  """A bool tensor: every gradient value is finite (one reduction per gradient, then one AND)."""
  checks = [tf.reduce_all(tf.is_finite(g)) for g in grads if g is not None]
  return tf.reduce_all(tf.stack(checks)) if checks else tf.constant(True)
