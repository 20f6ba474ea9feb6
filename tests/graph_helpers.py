"""Tiny in-memory training graphs for the step/loop/loss-scale tests (no input workers, no trainer flags)."""
import numpy as np
import tensorflow.compat.v1 as tf

from vit_raw.model_input import scale_input
from launch import ema
from launch import plan as plan_lib
from launch import train_graph
from vit_raw.configs import get_config
from vit_raw.model import vit

NUM_CLASSES = 3
BATCH = 8
SIZE = 8


def fake_batches(seed=0, n=16):
  """A repeating tf.data stream of (uint8 images, labels, mask) batches with static shapes."""
  rs = np.random.RandomState(seed)
  images = rs.randint(0, 256, (n, SIZE, SIZE, 3)).astype(np.uint8)
  labels = rs.randint(0, NUM_CLASSES, n).astype(np.int32)
  ds = tf.data.Dataset.from_tensor_slices((images, labels, np.ones(n, np.float32)))
  return ds.repeat().batch(BATCH, drop_remainder=True)


def build(iterations=1, optimizer="momentum", schedule="cosine", loss_scale="off", total_steps=12, lr=0.05,
          compute_dtype=tf.float32, growth_steps=1000, initial_scale=2.0**10, poison=None, weight_decay=0.0,
          in_graph_loop=True, ema_hook_decay=None, **more):
  """Builds a training loop on fake data with the trainer's step factory; returns (loop, iterator, parts dict).
  `poison` multiplies the logits; ema_hook_decay: a launch.ema.WeightAverage of that decay on every step (parts
  "ema"); `more`: other launch.plan.synthetic_plan fields."""
  tf.set_random_seed(0)
  config = get_config("tiny", hidden_size=16, num_layers=2, num_heads=2, mlp_dim=32)

  def model_fn(images, is_training, rng_seed=None):
    logits = vit(scale_input(images, compute_dtype), config, NUM_CLASSES, is_training, compute_dtype=compute_dtype)
    return logits * poison if poison is not None else logits

  plan = plan_lib.synthetic_plan(config, SIZE, NUM_CLASSES, BATCH, iterations, optimizer=optimizer, lr=lr,
                                 total_steps=total_steps, schedule=schedule, warmup_steps=2, decay_steps=3,
                                 compute_dtype=compute_dtype, loss_scale=loss_scale, loss_scale_init=initial_scale,
                                 loss_scale_growth_steps=growth_steps, weight_decay=weight_decay, label_smoothing=0.1,
                                 kernels="plain", lean_backward=("none",), in_graph_loop=in_graph_loop, **more)
  train_graph.create_model_variables(plan, model_fn)
  iterator = tf.data.make_initializable_iterator(fake_batches())
  averager = ema.WeightAverage(ema_hook_decay) if ema_hook_decay else None
  training = train_graph.build_training(plan, train_graph.BatchSource(iterator), model_fn=model_fn,
                                        step_hooks=averager.step_hooks(plan) if averager else ())
  parts = {
      "global_step": training.global_step,
      "loss_scale": training.loss_scale,
      "optimizer": training.optimizer,
      "ema": averager
  }
  return training.loop, iterator, parts


def session():
  """A session without grappler: these graphs are tiny, and grappler's start-up dominates their run time."""
  from tensorflow.core.protobuf import rewriter_config_pb2  # pylint: disable=g-import-not-at-top
  rewrite = rewriter_config_pb2.RewriterConfig(disable_meta_optimizer=True)
  return tf.Session(config=tf.ConfigProto(graph_options=tf.GraphOptions(rewrite_options=rewrite)))


def model_weights(sess):
  return {v.op.name: sess.run(v) for v in tf.trainable_variables()}


def slot_values(sess, optimizer):
  values = {}
  for name in optimizer.get_slot_names():
    for v in tf.trainable_variables():
      slot = optimizer.get_slot(v, name)
      if slot is not None:
        values[slot.op.name] = sess.run(slot)
  return values
