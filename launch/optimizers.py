"""The optimizer factory: one call that returns a plain tf.train.Optimizer.

Because the result is an ordinary tf.train.Optimizer (compute_gradients / apply_gradients), the NPU loss-scale
optimizer can wrap it without any change to the training loop: see `launch.train_graph` and `launch.npu`. The
gradient all-reduce of several ranks is not a wrapper but the data-parallel seam (`launch.distributed`).
"""
import collections

import tensorflow.compat.v1 as tf

from vit_raw import parameters

OPTIMIZERS = ("momentum", "sgd", "adam", "adamw")


class AdamWOptimizer(tf.train.AdamOptimizer):
  """Adam with decoupled weight decay (Loshchilov & Hutter): w -= lr * weight_decay * w beside the Adam update.

  The decay is multiplied by the (scheduled) learning rate, as in PyTorch's AdamW, so it follows warm-up and decay.
  Only the variables in `decay_vars` (by default every kernel, i.e. rank >= 2) decay.
  """

  def __init__(self, learning_rate, weight_decay, beta1=0.9, beta2=0.999, epsilon=1e-8, decay_filter=None,
               name="AdamW"):
    super(AdamWOptimizer, self).__init__(learning_rate, beta1=beta1, beta2=beta2, epsilon=epsilon, name=name)
    self._weight_decay = weight_decay
    self._decay_filter = decay_filter or decays

  def apply_gradients(self, grads_and_vars, global_step=None, name=None):
    grads_and_vars = list(grads_and_vars)
    lr = self._call_if_callable(self._lr)
    decay_ops = []
    for grad, var in grads_and_vars:
      if grad is not None and self._decay_filter(var):
        # The decay reads the weight before this step's Adam update, as the paper's algorithm does.
        decay_ops.append(
            var.assign_sub(tf.cast(lr, var.dtype.base_dtype) * self._weight_decay * var.read_value(), read_value=False))
    with tf.control_dependencies(decay_ops):
      return super(AdamWOptimizer, self).apply_gradients(grads_and_vars, global_step=global_step, name=name)


def decays(var, exempt="timm"):
  """True for the variables weight decay applies to. exempt="timm" (timm/DeiT's rule): matrices (kernels), not
  biases, norms, the position embedding or the class token; "none": every variable."""
  if exempt == "none":
    return True
  return var.shape.ndims is not None and not parameters.exempt_from_weight_decay(var.op.name, var.shape.as_list())


def _single(optim, learning_rate):
  name, momentum, weight_decay = optim.name, optim.momentum, optim.weight_decay
  if name == "momentum":
    return tf.train.MomentumOptimizer(learning_rate, momentum)
  if name == "sgd":
    return tf.train.GradientDescentOptimizer(learning_rate)
  if name == "adam":
    return tf.train.AdamOptimizer(learning_rate, beta1=momentum)
  if name == "adamw":
    return AdamWOptimizer(learning_rate, weight_decay, beta1=momentum,
                          decay_filter=lambda var: decays(var, optim.weight_decay_exempt))
  raise ValueError("unknown optimizer %r; expected one of %s" % (name, ", ".join(OPTIMIZERS)))


def make_optimizer(optim, learning_rate, num_layers=None):
  """Returns the optimizer of an OptimPlan with `learning_rate` (a float, tensor or zero-argument callable).

  momentum: MomentumOptimizer(momentum) as official fine-tuning (momentum 0.9); sgd: plain gradient descent;
  adam: Adam(beta1=momentum); adamw: AdamWOptimizer(weight_decay). For the non-adamw optimizers, weight decay is an
  L2 term added to the loss by `l2_penalty`. With layer_decay < 1 a LayerwiseOptimizer (num_layers: the model's
  encoder blocks) runs one such optimizer per layer, each at its share of the lr.
  """
  if optim.layer_decay == 1:
    return _single(optim, learning_rate)
  return LayerwiseOptimizer(lambda lr: _single(optim, lr), learning_rate, optim.layer_decay, num_layers)


class LayerwiseOptimizer(tf.train.Optimizer):
  """Layer-wise lr decay (BEiT / MAE fine-tuning): a variable of layer id i (vit_raw.parameters.layer_id: embeddings 0,
  block b b + 1, final norm and head L + 1) trains at lr x decay^(L + 1 - i), with an optimizer of its own per
  layer (so Adam's moments and momentum slots stay per variable as always)."""

  def __init__(self, make, learning_rate, decay, num_layers, name="Layerwise"):
    super(LayerwiseOptimizer, self).__init__(False, name)
    self._make, self._lr, self._decay, self._num_layers = make, learning_rate, float(decay), int(num_layers)
    self._by_layer = {}

  def scale_of(self, var):
    return self._decay**(self._num_layers + 1 - parameters.layer_id(var.op.name, self._num_layers))

  def _optimizer(self, var):
    layer = parameters.layer_id(var.op.name, self._num_layers)
    if layer not in self._by_layer:
      scale, lr = self.scale_of(var), self._lr
      self._by_layer[layer] = self._make(lambda: (lr() if callable(lr) else lr) * scale)
    return self._by_layer[layer]

  def apply_gradients(self, grads_and_vars, global_step=None, name=None):
    groups = collections.OrderedDict()
    for grad, var in grads_and_vars:
      groups.setdefault(id(self._optimizer(var)), (self._optimizer(var), []))[1].append((grad, var))
    ops = [opt.apply_gradients(pairs) for opt, pairs in groups.values()]
    if global_step is not None:
      with tf.control_dependencies(ops):
        ops = [global_step.assign_add(1)]
    return tf.group(*ops, name=name)

  def get_slot_names(self):
    return sorted(set(n for opt in self._by_layer.values() for n in opt.get_slot_names()))

  def get_slot(self, var, name):
    return self._optimizer(var).get_slot(var, name)

  def variables(self):
    return [v for opt in self._by_layer.values() for v in opt.variables()]


def l2_penalty(variables, optim):
  """0.5 * weight_decay * sum |w|^2 over the decaying variables, or None (adamw decays itself; wd 0 is off)."""
  if not optim.weight_decay or optim.name == "adamw":
    return None
  terms = [tf.nn.l2_loss(v) for v in variables if decays(v, optim.weight_decay_exempt)]
  return optim.weight_decay * tf.add_n(terms) if terms else None
