"""The model's input scaling: the uint8 batches of the input pipeline -> model input in [-1, 1].

Done in the graph, not in the workers, so batches cross process and host->device boundaries as uint8 (4x smaller
than float32) and the scaling runs on the accelerator.
"""
import tensorflow.compat.v1 as tf


def scale_input(images_uint8, dtype=tf.float32):
  """images / 127.5 - 1 as `dtype` (computed in float32, so 0 -> -1 and 255 -> 1 exactly, then cast)."""
  scaled = tf.cast(images_uint8, tf.float32) * (1.0 / 127.5) - 1.0
  return tf.cast(scaled, dtype) if dtype != tf.float32 else scaled
