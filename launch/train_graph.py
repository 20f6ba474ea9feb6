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


def forward_with_reads(model_fn, images, is_training, record=True, rng_seed=None):
  """Runs model_fn(images, is_training[, rng_seed]) under a WeightReads getter; returns (logits, WeightReads)."""
  reads = WeightReads(record=record)
  with tf.variable_scope(tf.get_variable_scope(), custom_getter=reads):
    logits = model_fn(images, is_training) if rng_seed is None else model_fn(images, is_training, rng_seed=rng_seed)
  return logits, reads


def cross_entropy(logits, labels, num_classes, label_smoothing=0.0, mask=None, mix_labels=None, mix_weight=None):
  """Mean softmax cross-entropy in float32, with optional label smoothing, row mask and mixed (soft) targets.

  With mix_labels / mix_weight (Mixup, CutMix: input/mixing.py) the target of row i is
  w_i * t(labels_i) + (1 - w_i) * t(mix_labels_i), where t is the (smoothed) one-hot target: smoothing composes with
  the mixing, as timm's mixup_target does.
  """

  def target(ids):
    onehot = tf.one_hot(ids, num_classes, dtype=tf.float32)
    return onehot * (1.0 - label_smoothing) + label_smoothing / num_classes if label_smoothing else onehot

  targets = target(labels)
  if mix_labels is not None:
    w = tf.expand_dims(tf.cast(mix_weight, tf.float32), -1)
    targets = w * targets + (1.0 - w) * target(mix_labels)
  per_row = tf.nn.softmax_cross_entropy_with_logits_v2(labels=targets, logits=tf.cast(logits, tf.float32))
  if mask is None:
    return tf.reduce_mean(per_row)
  return tf.reduce_sum(per_row * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)


Batch = collections.namedtuple("Batch", ["images", "labels", "mask", "mix_labels", "mix_weight"])
Batch.__doc__ = """One training batch as the graph sees it.

Attributes:
  images: uint8 [B,H,W,3]; labels: int32 [B]; mask: float32 [B] (0 for padding rows).
  mix_labels, mix_weight: the Mixup/CutMix partner label and the weight of `labels` per row (None: not mixed).
"""

StepSpec = collections.namedtuple("StepSpec", [
    "model_fn", "num_classes", "optimizer", "lr_holder", "learning_rate_fn", "global_step", "loss_scale",
    "grad_clip_norm", "label_smoothing", "l2_fn", "optimizer_gradients", "parallel", "accum_steps", "seed", "step_hooks"
])
StepSpec.__doc__ = """What one training step needs (made by build_training from a plan; nothing else builds one).

Attributes:
  model_fn: fn(images uint8 [B,H,W,3], is_training, rng_seed=None) -> float32 logits (make_model_fn).
  num_classes: classes of the head.
  optimizer: a tf.train.Optimizer (possibly wrapped by the NPU loss-scale optimizer) whose learning rate is
    `lr_holder`.
  lr_holder: the callable from learning_rate_holder(); each step sets it to its scheduled lr.
  learning_rate_fn: fn(step tensor) -> lr tensor.
  global_step: int64 resource variable counting batches consumed.
  loss_scale: a loss_scale.LossScale (mode "off" when not used, or when the NPU optimizer scales).
  grad_clip_norm, label_smoothing: global-norm clip (0 or None: off) and label smoothing of the loss.
  l2_fn: fn(list of variables) -> L2 term or None.
  optimizer_gradients: True to take gradients with optimizer.compute_gradients (the NPU, where
    NPULossScaleOptimizer scales the loss; one step per graph), False to differentiate the weight reads (needed
    inside the CPU/GPU in-graph loop).
  parallel: the data-parallel seam (launch.distributed.DataParallel), or None for one process.
  accum_steps: micro-batches per optimizer step; each batch of the source holds accum_steps micro-batches.
  seed: the run's seed; with the global step (and micro-batch) it seeds the model's stateless random ops.
  step_hooks: fns(update op) -> op run after every step's update, inside the loop (e.g. the weights' EMA).
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


def train_step(spec, batch):
  """Builds one training step on a Batch; returns (loss, lr, loss_scale_used, update_op).

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
    grads, loss, unique_vars = _accumulated_gradients(spec, batch, scale, step)
  else:
    grads, loss, unique_vars = _gradients(spec, batch, scale, _rng_seed(spec, step, 0))
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
  for hook in spec.step_hooks:
    with tf.control_dependencies([update]):
      update = tf.group(update, hook(update))
  return loss, lr, scale, update


def _rng_seed(spec, step, micro):
  """The [2] int64 seed of the model's stateless random ops at (step, micro-batch): a resumed run draws the same."""
  return tf.stack([tf.constant(spec.seed, tf.int64), tf.cast(step, tf.int64) * spec.accum_steps + micro])


def _gradients(spec, batch, scale, rng_seed):
  """(gradients of the scaled loss, loss, variables) of one batch; one gradient per variable the model read."""
  logits, reads = forward_with_reads(spec.model_fn, batch.images, True, rng_seed=rng_seed)
  loss = cross_entropy(logits, batch.labels, spec.num_classes, spec.label_smoothing, batch.mask, batch.mix_labels,
                       batch.mix_weight)
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


def _accumulated_gradients(spec, batch, scale, after):
  """(mean gradients, mean loss, variables) over the accum_steps micro-batches of a batch, in a tf.while_loop that
  slices micro-batch j and adds its gradients to accumulators (one model copy in the graph, one micro-batch of
  activations in memory). `after` is a tensor the first weight read must wait for (the previous step's update)."""
  k = spec.accum_steps
  micro = int(batch.images.shape[0]) // k
  candidates = tf.trainable_variables()
  index = {id(v): n for n, v in enumerate(candidates)}
  read = {}

  def cut(tensor, j):
    if tensor is None:
      return None
    begin = [j * micro] + [0] * (tensor.shape.ndims - 1)
    return tf.slice(tensor, begin, [micro] + tensor.shape.as_list()[1:])

  def body(j, token, loss_sum, *acc):
    with tf.control_dependencies([j, token]):
      grads, loss, variables = _gradients(spec, Batch(*[cut(t, j) for t in batch]), scale,
                                          _rng_seed(spec, after, tf.cast(j, tf.int64)))
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


LoopValues = collections.namedtuple(
    "LoopValues",
    ["mean_loss", "last_loss", "lr", "loss_scale", "skipped", "global_step", "last_images", "last_labels", "extra"])
LoopValues.__doc__ = """What one sess.run of the training op returned.

Attributes:
  mean_loss, last_loss: the mean loss of the loop's steps and its last step's; lr: the last step's lr.
  loss_scale, skipped: the loss scale after the loop and the overflow steps skipped so far.
  global_step: the global step after the loop.
  last_images, last_labels: the loop's last batch (with keep_last_batch, for the debug probes; else None).
  extra: {name: value} of the fetches callbacks added (Callback.fetches).
"""

TrainLoop = collections.namedtuple("TrainLoop", ["fetches", "iterations"])
TrainLoop.__doc__ = """The per-sess.run training op.

Attributes:
  fetches: what to sess.run: "update" (the op that runs the steps) and the LoopValues fields as tensors (values()
    turns the result into a LoopValues).
  iterations: int32 placeholder_with_default(N): steps in this run; feed a smaller value to cut a loop short.
"""


def values(fetched, extra=None):
  """A LoopValues from the dict sess.run returned for TrainLoop.fetches (+ callbacks' `extra` names)."""
  extra = {name: fetched[name] for name in (extra or ())}
  return LoopValues(**{f: fetched.get(f) for f in LoopValues._fields if f != "extra"}, extra=extra)


def build_train_loop(spec, next_batch, iterations_per_loop, in_graph_loop=True, keep_last_batch=False):
  """Builds the training op that runs `iterations_per_loop` steps per sess.run.

  in_graph_loop=True (CPU/GPU): a tf.while_loop whose body pulls a batch (next_batch() inside the body) and applies
  the update; iteration k+1 waits on iteration k's update. in_graph_loop=False (NPU; npu_bridge repeats the graph
  itself via set_iteration_per_loop): one step.
  """
  iterations = tf.placeholder_with_default(tf.constant(int(iterations_per_loop), tf.int32), [], name="iterations")

  if not in_graph_loop:
    batch = next_batch()
    loss, lr, scale, update = train_step(spec, batch)
    outputs = [loss, loss, lr, scale]
    last_batch = (batch.images, batch.labels) if keep_last_batch else None
  else:

    def body(i, loss_sum, last_loss, last_lr, last_scale, *kept):
      with tf.control_dependencies([i, loss_sum]):
        batch = next_batch()
        loss, lr, scale, update = train_step(spec, batch)
      with tf.control_dependencies([update]):
        out = [i + 1, loss_sum + loss, tf.identity(loss), tf.identity(lr), tf.identity(scale)]
        if keep_last_batch:
          out += [tf.identity(batch.images), tf.identity(batch.labels)]
      return out

    init = [tf.constant(0), tf.constant(0.0), tf.constant(0.0), tf.constant(0.0), tf.constant(0.0)]
    if keep_last_batch:
      shapes = next_batch.shapes
      init += [tf.zeros(shapes[0], shapes[2]), tf.zeros(shapes[1], shapes[3])]
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
  """next_batch() for the loop: a Batch from iterator.get_next() made at call time (so it can be inside the loop
  body). The iterator yields (images, labels, mask) or, with Mixup/CutMix, also (mix_labels, mix_weight).

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
    parts = list(self._iterator.get_next())
    return Batch(*(parts + [None] * (5 - len(parts))))


def constant_batches(images, labels, mask=None):
  """next_batch() over one fixed batch held in non-trainable variables (benchmarks: no input pipeline timed)."""
  images = tf.Variable(images, trainable=False, name="bench_images")
  labels = tf.Variable(labels, trainable=False, name="bench_labels")
  mask = tf.ones([int(images.shape[0])]) if mask is None else tf.constant(mask)
  return lambda: Batch(images.read_value(), labels.read_value(), mask, None, None)


Training = collections.namedtuple("Training", ["loop", "model_fn", "optimizer", "global_step", "loss_scale"])
Training.__doc__ = """The training side of a graph, from build_training.

Attributes:
  loop: the TrainLoop; model_fn: the model as the step calls it (make_model_fn), for evaluation and probes.
  optimizer: the optimizer (its slots are checkpointed); global_step: the int64 step variable.
  loss_scale: the trainer's LossScale (mode "off" when NPULossScaleOptimizer scales instead).
"""


def make_model_fn(plan):
  """fn(images uint8, is_training, rng_seed=None) -> float32 logits of the plan's model: [-1, 1] scaling in the
  compute dtype, then the ViT with the plan's kernel set, dropout and stochastic depth."""
  from launch import device as device_lib  # pylint: disable=g-import-not-at-top
  from vit_raw.model import vit
  from vit_raw.model_input import scale_input  # pylint: disable=g-import-not-at-top
  model, dtype = plan.model, plan.precision.compute_dtype
  kernel_set = device_lib.kernel_set(model.kernels, model.lean_backward)

  def model_fn(images, is_training, rng_seed=None):
    return vit(scale_input(images, dtype), model.config, model.num_classes, is_training, dropout_rate=model.dropout,
               compute_dtype=dtype, kernels=kernel_set, drop_path_rate=model.drop_path, rng_seed=rng_seed)

  return model_fn


def create_model_variables(plan, model_fn):
  """The model's variables, from a dummy batch, before anything else: their initial values never depend on what
  is built after them."""
  size = plan.model.image_size
  forward_with_reads(model_fn, tf.zeros([1, size, size, 3], tf.uint8), False, record=False)


def build_training(plan, next_batch, parallel=None, step_hooks=(), keep_last_batch=False, model_fn=None):
  """The one step factory: the plan's model, loss, optimizer, lr schedule, loss scaling and N-step loop on
  `next_batch` (a BatchSource or any fn() -> Batch). The trainer, the benchmarks and the tests all build their
  training op here. Creates the model's variables first when model_fn is not given (then it is made from the
  plan). parallel: the data-parallel seam (None or inactive: one process)."""
  from launch import npu  # pylint: disable=g-import-not-at-top
  from launch import optimizers  # pylint: disable=g-import-not-at-top
  from launch import schedules  # pylint: disable=g-import-not-at-top
  if model_fn is None:
    model_fn = make_model_fn(plan)
    create_model_variables(plan, model_fn)
  optim, schedule, precision = plan.optim, plan.schedule, plan.precision
  accum_steps = plan.data.accum_steps
  global_step = _global_step()
  npu_scaling = plan.device == "npu" and precision.loss_scale_mode != "off" and accum_steps == 1
  loss_scale = loss_scale_lib.LossScale("off" if npu_scaling else precision.loss_scale_mode, precision.loss_scale_init,
                                        precision.loss_scale_growth_steps)
  lr_holder = learning_rate_holder()
  optimizer = optimizers.make_optimizer(optim, lr_holder, plan.model.config.num_layers)
  if npu_scaling:
    optimizer = npu.loss_scale_optimizer(optimizer, precision.loss_scale_mode, precision.loss_scale_init,
                                         precision.loss_scale_growth_steps, is_distributed=plan.dist.num_ranks > 1)

  def lr_fn(step):
    return schedules.learning_rate(step, optim.lr, schedule.total_steps, schedule.kind, schedule.warmup_steps,
                                   schedule.decay_value, schedule.decay_steps)

  spec = StepSpec(model_fn=model_fn, num_classes=plan.model.num_classes, optimizer=optimizer, lr_holder=lr_holder,
                  learning_rate_fn=lr_fn, global_step=global_step, loss_scale=loss_scale,
                  grad_clip_norm=optim.grad_clip_norm, label_smoothing=optim.label_smoothing,
                  l2_fn=lambda variables: optimizers.l2_penalty(variables, optim),
                  optimizer_gradients=not schedule.in_graph_loop and accum_steps == 1,
                  parallel=parallel if parallel is not None and parallel.active else None, accum_steps=accum_steps,
                  seed=plan.seed, step_hooks=tuple(step_hooks))
  loop = build_train_loop(spec, next_batch, schedule.iterations, schedule.in_graph_loop, keep_last_batch)
  if npu_scaling and npu.loss_scale_of(optimizer) is not None:
    loop.fetches["loss_scale"] = npu.loss_scale_of(optimizer)  # log npu_bridge's scale, not ours (off)
  return Training(loop, model_fn, optimizer, global_step, loss_scale)


def _global_step():
  step = tf.get_variable("global_step", [], tf.int64, tf.zeros_initializer(), trainable=False, use_resource=True)
  tf.add_to_collection(tf.GraphKeys.GLOBAL_STEP, step)
  return step
