"""Learning-rate schedules: linear warm-up, then cosine, linear or exponential decay, as a function of the step."""
import math

import tensorflow.compat.v1 as tf


def learning_rate(step, base_lr, total_steps, schedule="cosine", warmup_steps=0, decay_value=None, decay_steps=None):
  """Returns the float32 learning rate at `step` (an integer tensor counting batches consumed).

  Warm-up rises linearly from base_lr/warmup_steps at step 0 to base_lr at step warmup_steps (so step 0 already
  trains). After it:
    cosine:      base_lr * (end + (1 - end) * 0.5 * (1 + cos(pi * progress))), end = decay_value or 0;
    linear:      base_lr * (1 - (1 - end) * progress);
    exponential: base_lr * decay_value ** floor((step - warmup_steps) / decay_steps), decay_value default 0.1;
  where progress = (step - warmup_steps) / (total_steps - warmup_steps), clipped to [0, 1].
  """
  step = tf.cast(step, tf.float32)
  base = tf.constant(float(base_lr), tf.float32)
  warmup = float(max(0, warmup_steps))
  decay_len = float(max(1, total_steps - warmup))
  after = tf.maximum(step - warmup, 0.0)
  progress = tf.minimum(after / decay_len, 1.0)
  if schedule == "cosine":
    end = float(decay_value or 0.0)
    decayed = base * (end + (1.0 - end) * 0.5 * (1.0 + tf.cos(math.pi * progress)))
  elif schedule == "linear":
    end = float(decay_value or 0.0)
    decayed = base * (1.0 - (1.0 - end) * progress)
  elif schedule == "exponential":
    factor = 0.1 if decay_value is None else float(decay_value)
    every = float(max(1, decay_steps or 1))
    decayed = base * tf.pow(factor, tf.floor(after / every))
  else:
    raise ValueError("unknown lr schedule %r; expected cosine, linear or exponential" % schedule)
  if warmup <= 0:
    return decayed
  warm = base * tf.minimum((step + 1.0) / warmup, 1.0)
  return tf.where(step < warmup, warm, decayed)
