"""The recipe's graph side: soft-target loss, the weights' EMA inside the N-step loop, layer-wise lr decay,
weight-decay exemptions, and callbacks' after_train when the loop fails."""
import glob
import os
import shutil

import numpy as np
import pytest
import tensorflow.compat.v1 as tf

from launch import callbacks as callbacks_lib
from launch import ema
from launch import optimizers
from launch import train_graph
from tests import graph_helpers as gh
from tests.train_helpers import log_text, read_log, run_trainer
from tools import model_source
from vit_raw import parameters


def test_mixed_soft_targets_are_the_weighted_sum_of_both_smoothed_losses():
  rs = np.random.RandomState(0)
  logits = tf.constant(rs.randn(6, 5).astype(np.float32))
  a, b = tf.constant([0, 1, 2, 3, 4, 0]), tf.constant([4, 3, 2, 1, 0, 0])
  w = tf.constant([1.0, 0.0, 0.3, 0.5, 0.9, 0.25])
  mixed = train_graph.cross_entropy(logits, a, 5, 0.1, mix_labels=b, mix_weight=w)
  per_a = [train_graph.cross_entropy(logits[i:i + 1], a[i:i + 1], 5, 0.1) for i in range(6)]
  per_b = [train_graph.cross_entropy(logits[i:i + 1], b[i:i + 1], 5, 0.1) for i in range(6)]
  plain = train_graph.cross_entropy(logits, a, 5, 0.1)
  unmixed = train_graph.cross_entropy(logits, a, 5, 0.1, mix_labels=b, mix_weight=tf.ones([6]))
  with tf.Session() as sess:
    mixed, per_a, per_b, plain, unmixed = sess.run([mixed, per_a, per_b, plain, unmixed])
  weights = np.array([1.0, 0.0, 0.3, 0.5, 0.9, 0.25])
  # Cross-entropy is linear in the target: mixing targets = mixing the two losses row by row.
  assert mixed == pytest.approx(np.mean(weights * np.array(per_a) + (1 - weights) * np.array(per_b)), rel=1e-5)
  assert unmixed == pytest.approx(plain, rel=1e-6)


def _ema_run(iterations, loops, decay=0.9):
  with tf.Graph().as_default():
    return _ema_trace(iterations, loops, decay)


def _ema_trace(iterations, loops, decay):
  loop, iterator, parts = gh.build(iterations=iterations, total_steps=100, ema_hook_decay=decay)
  with gh.session() as sess:
    sess.run([tf.global_variables_initializer(), iterator.initializer])
    trace = [gh.model_weights(sess)]
    for _ in range(loops):
      sess.run(loop.fetches)
      trace.append(gh.model_weights(sess))
    shadows = {v.op.name: sess.run(s) for v, s in parts["ema"].shadows.items()}
  return trace, shadows


def test_ema_follows_its_formula_every_step_and_inside_the_in_graph_loop():
  decay = 0.9
  trace, shadows = _ema_run(1, 4, decay)
  expected = dict(trace[0])
  for n, weights in enumerate(trace[1:], 1):  # the n-th update leaves global step n
    d = min(decay, (1.0 + n) / (10.0 + n))
    expected = {k: d * expected[k] + (1 - d) * weights[k] for k in weights}
  for name, value in shadows.items():
    np.testing.assert_allclose(value, expected[name], rtol=1e-5, atol=1e-6)
  assert any(not np.allclose(shadows[k], trace[-1][k]) for k in shadows)  # an average, not the last weights
  _, in_loop = _ema_run(4, 1, decay)  # the same 4 steps as one sess.run
  for name in shadows:
    np.testing.assert_allclose(in_loop[name], shadows[name], rtol=1e-6, atol=1e-7)


def test_layer_decay_scales_each_layers_sgd_update():
  num_layers, decay = 2, 0.5
  results = {}
  for layer_decay in (1.0, decay):
    with tf.Graph().as_default():
      loop, iterator, _ = gh.build(optimizer="sgd", layer_decay=layer_decay, schedule="linear", total_steps=10**6)
      with gh.session() as sess:
        sess.run([tf.global_variables_initializer(), iterator.initializer])
        before = gh.model_weights(sess)
        sess.run(loop.fetches)
        results[layer_decay] = {k: v - before[k] for k, v in gh.model_weights(sess).items()}
  from vit_raw import parameters  # pylint: disable=g-import-not-at-top
  seen = set()
  for name, full in results[1.0].items():
    layer = parameters.layer_id(name, num_layers)
    seen.add(layer)
    np.testing.assert_allclose(results[decay][name], full * decay**(num_layers + 1 - layer), rtol=1e-4, atol=1e-7)
  assert seen == {0, 1, 2, 3}  # embeddings, both blocks, head


def test_weight_decay_spares_biases_norms_and_embeddings_unless_told_otherwise():
  gh.build()
  variables = tf.trainable_variables()
  spared = [v.op.name for v in variables if not optimizers.decays(v, "timm")]
  assert spared and all(
      v.shape.ndims < 2 or "pos_embedding" in v.op.name or "cls" in v.op.name for v in variables if v.op.name in spared)
  assert any("pos_embedding" in n for n in spared) and any("bias" in n for n in spared)
  assert all(optimizers.decays(v, "none") for v in variables)


class _Recorder(callbacks_lib.Callback):

  def __init__(self):
    self.failure = "not called"

  def after_train(self, run):
    self.failure = run.failure


def test_after_train_runs_when_the_loop_fails_and_checkpoints_are_not_written():

  class Boom(callbacks_lib.Callback):

    def after_loop(self, run, loop):
      raise callbacks_lib.TrainingStopped("stop here")

  class Checkpoints(object):
    saved = []

    def save(self, sess, step):
      self.saved.append(step)

  recorder, saver = _Recorder(), callbacks_lib.CheckpointSaver(callbacks_lib.Trigger(5, 5))
  from launch import train  # pylint: disable=g-import-not-at-top
  loop, iterator, _ = gh.build()

  class Graph(object):
    training = train_graph.Training(loop, None, None, None, None)
    train_iterator = iterator
    checkpoints = Checkpoints()

  class Plan(object):
    device = "cpu"
    schedule = type("S", (), {"iterations": 1, "total_steps": 5, "in_graph_loop": True})
    dist = type("D", (), {"rank": 0})

  with gh.session() as sess:
    sess.run(tf.global_variables_initializer())
    run = callbacks_lib.RunState(sess, Graph, Plan, None, 0, -1.0)
    with pytest.raises(callbacks_lib.TrainingStopped):
      train.run_loop(run, [recorder, Boom(), saver])
  assert isinstance(recorder.failure, callbacks_lib.TrainingStopped)
  assert run.step == 1 and Graph.checkpoints.saved == []  # after_train never saves a failing loop


def test_mixing_reaches_the_loss_and_off_epoch_turns_it_off(tmp_path):
  """Mixup / CutMix flags travel from the command line through the plan to the workers and the soft-target loss."""
  steps = ["--train_steps=6", "--iterations_per_loop=3"]
  plain = run_trainer(str(tmp_path / "plain"), *steps)
  off = run_trainer(str(tmp_path / "off"), "--mixup=0.8", "--cutmix=1.0", "--mixup_off_epoch=0", *steps)
  mixed = run_trainer(str(tmp_path / "mixed"), "--mixup=0.8", "--cutmix=1.0", *steps)
  assert off["final_loss"] == plain["final_loss"]  # off from epoch 0: the very same batches and targets
  assert mixed["final_loss"] != plain["final_loss"]
  assert "mixup 0.8" in log_text(str(tmp_path / "mixed")) and "cutmix 1" in log_text(str(tmp_path / "mixed"))


def test_the_moving_average_is_checkpointed_resumed_evaluated_and_what_the_tools_load(tmp_path):
  args = ("--train_steps=12", "--iterations_per_loop=4", "--save_every_loops=1", "--ema_decay=0.9")
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  run_trainer(straight, *args)
  shutil.copytree(straight, resumed)
  for path in glob.glob(os.path.join(resumed, "model.ckpt-12.*")):  # as if the run died after step 8's checkpoint
    os.remove(path)
  tf.train.update_checkpoint_state(resumed, os.path.join(resumed, "model.ckpt-8"))
  run_trainer(resumed, *args)
  _, evals, _ = read_log(straight)
  assert evals and all(0.0 <= e["ema_top1"] <= 1.0 for e in evals)
  readers = [tf.train.load_checkpoint(tf.train.latest_checkpoint(d)) for d in (straight, resumed)]
  shapes = readers[0].get_variable_to_shape_map()
  weights = sorted(n for n in shapes if n.startswith("vit/") and n.split("/")[-1] in parameters.WEIGHT_LEAVES)
  shadows = sorted(n for n in shapes if n.startswith(ema.SCOPE + "/"))
  assert weights and shadows == [ema.shadow_name(n) for n in weights]
  assert readers[1].get_tensor("global_step") == 12
  for name in shadows:  # resuming from step 8 restores the average: it ends where the straight run's does
    np.testing.assert_allclose(readers[1].get_tensor(name), readers[0].get_tensor(name), rtol=1e-5, atol=1e-6)
  source = model_source.from_run(straight)
  assert source.weights == "ema"
  moved = 0
  for name in weights:
    np.testing.assert_array_equal(source.values[name[len("vit/"):]], readers[0].get_tensor(ema.shadow_name(name)))
    moved += not np.array_equal(readers[0].get_tensor(name), readers[0].get_tensor(ema.shadow_name(name)))
  assert moved > 0  # the average lags the weights: the tools are not reading the trained weights by another name
