"""The training graph: one step (forward, loss, gradients, loss scaling, clipping, update) and a loop of N of them.

Following one batch: `next_batch()` pulls (images uint8, labels, mask) from the iterator, `forward` scales the
images to [-1, 1] and runs the model, the loss is softmax cross-entropy (+ an optional L2 term), its gradients are
taken with respect to the weight *reads* of this step (summed over accumulated micro-batches), averaged over the
data-parallel ranks (launch.distributed, the seam), unscaled, checked for inf/NaN, clipped to the global norm and
applied; the global step counts the batch.

Why the reads: on CPU/GPU, `iterations_per_loop` steps run inside one tf.while_loop. A weight read created outside
the loop would be evaluated once and reused by every iteration, so the model is built under a custom getter that
(1) creates variables as resource variables under tf.init_scope (so their initialisers and the optimizer slots live
outside the loop; TF's Optimizer.apply_gradients already creates slots under init_scope on both stacks), and
(2) hands the model a fresh `read_value()` made under a control dependency on the loop counter, which itself depends
on the previous iteration's update. So iteration k+1 reads the weights iteration k wrote, and gradients never cross
the loop boundary.
"""
import collections

import tensorflow.compat.v1 as tf

from launch import loss_scale as loss_scale_lib


class WeightReads(object):
  """A custom getter that forces resource variables and records (variable, read tensor) pairs of one forward pass.

  Attributes:
    pairs: list of (variable, read tensor) in the order the model asked for them.
  """

  def __init__(self, record=True):
    self.pairs = []
    self._record = record

  def __call__(self, getter, name, *args, **kwargs):
    kwargs["use_resource"] = True
    with tf.init_scope():
      var = getter(name, *args, **kwargs)
    if not self._record or not kwargs.get("trainable", True):
      return var
    read = var.read_value()
    self.pairs.append((var, read))
    return read


def forward_with_reads(model_fn, images, is_training, record=True):
  """Runs model_fn(images, is_training) under a WeightReads getter; returns (logits, WeightReads)."""
  reads = WeightReads(record=record)
  with tf.variable_scope(tf.get_variable_scope(), custom_getter=reads):
    logits = model_fn(images, is_training)
  return logits, reads


def cross_entropy(logits, labels, num_classes, label_smoothing=0.0, mask=None):
  """Mean softmax cross-entropy in float32, with optional label smoothing and row mask."""
  onehot = tf.one_hot(labels, num_classes, dtype=tf.float32)
  if label_smoothing:
    onehot = onehot * (1.0 - label_smoothing) + label_smoothing / num_classes
  per_row = tf.nn.softmax_cross_entropy_with_logits_v2(labels=onehot, logits=tf.cast(logits, tf.float32))
  if mask is None:
    return tf.reduce_mean(per_row)
  return tf.reduce_sum(per_row * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)


StepSpec = collections.namedtuple("StepSpec", [
    "model_fn", "num_classes", "optimizer", "lr_holder", "learning_rate_fn", "global_step", "loss_scale",
    "grad_clip_norm", "label_smoothing", "l2_fn", "optimizer_gradients", "parallel", "accum_steps"
])
StepSpec.__doc__ = """What one training step needs.

Attributes:
  model_fn: fn(images uint8 [B,H,W,3], is_training) -> float32 logits (does the [-1,1] scaling and dtype cast).
  num_classes: classes of the head.
  optimizer: a tf.train.Optimizer (possibly wrapped by a distributed / NPU loss-scale optimizer) whose learning
    rate is `lr_holder`.
  lr_holder: the callable from learning_rate_holder(); each step sets it to its scheduled lr.
  learning_rate_fn: fn(step tensor) -> lr tensor.
  global_step: int64 resource variable counting batches consumed.
  loss_scale: a loss_scale.LossScale (mode "off" when not used, or when the NPU optimizer scales).
  grad_clip_norm: global-norm clip (0 or None: off).
  label_smoothing: label smoothing of the loss.
  l2_fn: fn(list of variables) -> L2 term or None.
  optimizer_gradients: True to take gradients with optimizer.compute_gradients (the NPU, where
    NPULossScaleOptimizer scales the loss; one step per graph), False to differentiate the weight reads (needed
    inside the CPU/GPU in-graph loop).
  parallel: the data-parallel seam (launch.distributed.DataParallel), or None for one process.
  accum_steps: micro-batches per optimizer step; each batch of the source holds accum_steps micro-batches.
"""


class _LearningRate(object):
  """Holds the lr tensor of the step being built, so the optimizer (built once, with a callable lr) uses it."""

  def __init__(self):
    self.current = None

  def __call__(self):
    return self.current


def learning_rate_holder():
  """A callable to give the optimizer as its learning rate; `train_step` sets it to the step's scheduled lr."""
  return _LearningRate()


def train_step(spec, images, labels, mask):
  """Builds one training step on a batch; returns (loss, lr, loss_scale_used, update_op).

  With several ranks the gradients (and the loss, so every rank logs the global-batch loss) are averaged over the
  ranks right after they are computed, before unscaling, the finite check and clipping; with accum_steps K the
  batch is K micro-batches whose gradients are averaged first, so there is one all-reduce, one loss-scale decision
  and one update per K micro-batches.
  """
  step = spec.global_step.read_value()
  lr = spec.learning_rate_fn(step)
  spec.lr_holder.current = lr
  ls = spec.loss_scale
  scale = ls.scale.read_value()
  if spec.accum_steps > 1:
    if spec.optimizer_gradients:
      raise ValueError("accumulating micro-batches differentiates the weight reads, not optimizer.compute_gradients")
    grads, loss, unique_vars = _accumulated_gradients(spec, images, labels, mask, scale, step)
  else:
    grads, loss, unique_vars = _gradients(spec, images, labels, mask, scale)
  if spec.parallel is not None:
    grads, (loss,) = spec.parallel.allreduce_gradients(grads, [loss])
  grads = ls.unscale(grads, scale)
  finite = loss_scale_lib.all_finite(grads)
  if spec.grad_clip_norm:
    grads, _ = tf.clip_by_global_norm(grads, spec.grad_clip_norm)
  grads_and_vars = list(zip(grads, unique_vars))

  if ls.enabled:

    def _apply():
      with tf.control_dependencies([spec.optimizer.apply_gradients(grads_and_vars)]):
        return tf.constant(True)

    # A skipped step runs neither the optimizer nor its slot updates; only the loss-scale state moves.
    applied = tf.cond(finite, _apply, lambda: tf.constant(False))
    with tf.control_dependencies([applied]):
      update = tf.group(ls.update(finite), spec.global_step.assign_add(1, read_value=False))
  else:
    apply = spec.optimizer.apply_gradients(grads_and_vars)
    with tf.control_dependencies([apply]):
      update = tf.group(apply, spec.global_step.assign_add(1, read_value=False))
  return loss, lr, scale, update


def _gradients(spec, images, labels, mask, scale):
  """(gradients of the scaled loss, loss, variables) of one batch; one gradient per variable the model read."""
  logits, reads = forward_with_reads(spec.model_fn, images, True)
  loss = cross_entropy(logits, labels, spec.num_classes, spec.label_smoothing, mask)
  variables = [v for v, _ in reads.pairs]
  total = loss
  l2 = spec.l2_fn(variables) if spec.l2_fn else None
  if l2 is not None:
    total = loss + l2
  scaled = spec.loss_scale.scale_loss(total, scale)
  unique_vars = _unique(variables)
  if spec.optimizer_gradients:
    # The optimizer's own compute_gradients, so NPULossScaleOptimizer scales the loss and unscales the gradients
    # its way; used where the step is not inside an in-graph loop (the NPU).
    grads = [g for g, _ in spec.optimizer.compute_gradients(scaled, var_list=unique_vars)]
  else:
    grads = _sum_per_variable(variables, tf.gradients(scaled, [r for _, r in reads.pairs]))
  return grads, loss, unique_vars


def _accumulated_gradients(spec, images, labels, mask, scale, after):
  """(mean gradients, mean loss, variables) over the accum_steps micro-batches of a batch, in a tf.while_loop that
  slices micro-batch j and adds its gradients to accumulators (one model copy in the graph, one micro-batch of
  activations in memory). `after` is a tensor the first weight read must wait for (the previous step's update)."""
  k = spec.accum_steps
  micro = int(images.shape[0]) // k
  candidates = tf.trainable_variables()
  index = {id(v): n for n, v in enumerate(candidates)}
  read = {}

  def cut(tensor, j):
    begin = [j * micro] + [0] * (tensor.shape.ndims - 1)
    return tf.slice(tensor, begin, [micro] + tensor.shape.as_list()[1:])

  def body(j, token, loss_sum, *acc):
    with tf.control_dependencies([j, token]):
      grads, loss, variables = _gradients(spec, cut(images, j), cut(labels, j), cut(mask, j), scale)
    read["variables"] = variables
    out = list(acc)
    for v, g in zip(variables, grads):
      out[index[id(v)]] = acc[index[id(v)]] + g
    return [j + 1, token, loss_sum + loss] + out

  init = [tf.constant(0), after, tf.constant(0.0)] + [tf.zeros(v.shape, v.dtype.base_dtype) for v in candidates]
  results = tf.while_loop(lambda j, *unused: j < k, body, init, parallel_iterations=1, back_prop=False,
                          name="accumulate")
  inverse = 1.0 / k
  variables = read["variables"]
  grads = [results[3 + index[id(v)]] * inverse for v in variables]
  return grads, results[2] * inverse, variables


def _unique(variables):
  seen, out = set(), []
  for v in variables:
    if id(v) not in seen:
      seen.add(id(v))
      out.append(v)
  return out


def _sum_per_variable(variables, grads):
  """Sums the gradients of reads of the same variable (a model may read one weight twice)."""
  by_var = collections.OrderedDict()
  for v, g in zip(variables, grads):
    if g is None:
      by_var.setdefault(id(v), [])
      continue
    by_var.setdefault(id(v), []).append(g)
  out = []
  for v in _unique(variables):
    parts = by_var[id(v)]
    if not parts:
      out.append(tf.zeros_like(v))  # a weight unused by the loss gets a zero gradient
    else:
      out.append(parts[0] if len(parts) == 1 else tf.add_n(parts))
  return out


TrainLoop = collections.namedtuple("TrainLoop", ["fetches", "iterations"])
TrainLoop.__doc__ = """The per-sess.run training op.

Attributes:
  fetches: dict of tensors to sess.run: mean_loss, last_loss, lr, loss_scale, skipped, global_step (after the loop),
    "update" (the op that runs the steps) and, with keep_last_batch, last_images / last_labels (the loop's last
    batch, for the debug probes).
  iterations: int32 placeholder_with_default(N): steps in this run; feed a smaller value to cut a loop short.
"""


def build_train_loop(spec, next_batch, iterations_per_loop, in_graph_loop=True, keep_last_batch=False):
  """Builds the training op that runs `iterations_per_loop` steps per sess.run.

  in_graph_loop=True (CPU/GPU): a tf.while_loop whose body pulls a batch (next_batch() inside the body) and applies
  the update; iteration k+1 waits on iteration k's update. in_graph_loop=False (NPU; npu_bridge repeats the graph
  itself via set_iteration_per_loop): one step.
  """
  iterations = tf.placeholder_with_default(tf.constant(int(iterations_per_loop), tf.int32), [], name="iterations")

  if not in_graph_loop:
    images, labels, mask = next_batch()
    loss, lr, scale, update = train_step(spec, images, labels, mask)
    outputs = [loss, loss, lr, scale]
    last_batch = (images, labels) if keep_last_batch else None
  else:
    batch_shapes = None

    def body(i, loss_sum, last_loss, last_lr, last_scale, *kept):
      with tf.control_dependencies([i, loss_sum]):
        images, labels, mask = next_batch()
        loss, lr, scale, update = train_step(spec, images, labels, mask)
      with tf.control_dependencies([update]):
        out = [i + 1, loss_sum + loss, tf.identity(loss), tf.identity(lr), tf.identity(scale)]
        if keep_last_batch:
          out += [tf.identity(images), tf.identity(labels)]
      return out

    init = [tf.constant(0), tf.constant(0.0), tf.constant(0.0), tf.constant(0.0), tf.constant(0.0)]
    if keep_last_batch:
      batch_shapes = next_batch.shapes
      init += [tf.zeros(batch_shapes[0], batch_shapes[2]), tf.zeros(batch_shapes[1], batch_shapes[3])]
    results = tf.while_loop(lambda i, *unused: i < iterations, body, init, parallel_iterations=1, back_prop=False,
                            name="train_loop")
    count = tf.cast(tf.maximum(results[0], 1), tf.float32)
    outputs = [results[1] / count, results[2], results[3], results[4]]
    update = tf.group(*results)
    last_batch = (results[5], results[6]) if keep_last_batch else None

  with tf.control_dependencies([update] + outputs):
    fetches = {
        "mean_loss": tf.identity(outputs[0]),
        "last_loss": tf.identity(outputs[1]),
        "lr": tf.identity(outputs[2]),
        "loss_scale": spec.loss_scale.scale.read_value(),
        "skipped": spec.loss_scale.skipped.read_value(),
        "global_step": spec.global_step.read_value(),
    }
  fetches["update"] = update
  if last_batch is not None:
    fetches["last_images"], fetches["last_labels"] = last_batch
  return TrainLoop(fetches, iterations)


class BatchSource(object):
  """next_batch() for the loop: iterator.get_next() made at call time (so it can be inside the loop body).

  Attributes:
    shapes: (image shape, label shape, image dtype, label dtype) of one batch.
  """

  def __init__(self, iterator):
    self._iterator = iterator
    types = tf.data.get_output_types(iterator) if hasattr(tf.data, "get_output_types") else iterator.output_types
    shapes = tf.data.get_output_shapes(iterator) if hasattr(tf.data, "get_output_shapes") else \
        iterator.output_shapes
    self.shapes = (shapes[0], shapes[1], types[0], types[1])

  def __call__(self):
    images, labels, mask = self._iterator.get_next()
    return images, labels, mask


def standalone_loop(model_fn, num_classes, next_batch, image_shape, iterations=1, in_graph_loop=True,
                    optimizer="momentum", lr=0.01, total_steps=10**6, schedule="cosine", warmup_steps=0,
                    decay_steps=None, loss_scale=None, weight_decay=0.0, grad_clip_norm=1.0, label_smoothing=0.0,
                    parallel=None, accum_steps=1):
  """The trainer's step and N-step loop with fixed hyper-parameters and no flags, for benchmarks and tests.

  Creates the model's variables first (on a dummy batch of `image_shape`), then a global step, the optimizer and
  the loop exactly as launch.train does. Returns (TrainLoop, dict(global_step, loss_scale, optimizer)).
  """
  # Imported here: the schedules and optimizers are the trainer's, but the step itself does not depend on them.
  from launch import optimizers  # pylint: disable=g-import-not-at-top
  from launch import schedules  # pylint: disable=g-import-not-at-top
  forward_with_reads(model_fn, tf.zeros([1] + list(image_shape), tf.uint8), False, record=False)
  global_step = tf.get_variable("global_step", [], tf.int64, tf.zeros_initializer(), trainable=False, use_resource=True)
  ls = loss_scale or loss_scale_lib.LossScale("off")
  holder = learning_rate_holder()
  opt = optimizers.make_optimizer(optimizer, holder, 0.9, weight_decay)
  spec = StepSpec(
      model_fn=model_fn, num_classes=num_classes, optimizer=opt, lr_holder=holder,
      learning_rate_fn=lambda s: schedules.learning_rate(s, lr, total_steps, schedule, warmup_steps, None, decay_steps),
      global_step=global_step, loss_scale=ls, grad_clip_norm=grad_clip_norm, label_smoothing=label_smoothing,
      l2_fn=lambda v: optimizers.l2_penalty(v, weight_decay, optimizer), optimizer_gradients=not in_graph_loop,
      parallel=parallel, accum_steps=accum_steps)
  loop = build_train_loop(spec, next_batch, iterations, in_graph_loop)
  return loop, {"global_step": global_step, "loss_scale": ls, "optimizer": opt}
