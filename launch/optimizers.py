"""The optimizer factory: one call that returns a plain tf.train.Optimizer.

Because the result is an ordinary tf.train.Optimizer (compute_gradients / apply_gradients), the NPU loss-scale
optimizer can wrap it without any change to the training loop: see `launch.train_graph` and `launch.npu`. The
gradient all-reduce of several ranks is not a wrapper but the data-parallel seam (`launch.distributed`).
"""
import tensorflow.compat.v1 as tf

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


def decays(var):
  """True for the variables weight decay applies to: matrices (kernels), not biases, norms or 1-D parameters."""
  name = var.op.name
  return var.shape.ndims is not None and var.shape.ndims >= 2 and "pos_embedding" not in name and "/cls" not in name


def make_optimizer(name, learning_rate, momentum=0.9, weight_decay=0.0):
  """Returns the tf.train.Optimizer `name` with `learning_rate` (a float, tensor or zero-argument callable).

  momentum: MomentumOptimizer(momentum) as official fine-tuning (momentum 0.9); sgd: plain gradient descent;
  adam: Adam(beta1=momentum); adamw: AdamWOptimizer(weight_decay). For the non-adamw optimizers, weight decay is an
  L2 term added to the loss by `l2_penalty`.
  """
  if name == "momentum":
    return tf.train.MomentumOptimizer(learning_rate, momentum)
  if name == "sgd":
    return tf.train.GradientDescentOptimizer(learning_rate)
  if name == "adam":
    return tf.train.AdamOptimizer(learning_rate, beta1=momentum)
  if name == "adamw":
    return AdamWOptimizer(learning_rate, weight_decay, beta1=momentum)
  raise ValueError("unknown optimizer %r; expected one of %s" % (name, ", ".join(OPTIMIZERS)))


def l2_penalty(variables, weight_decay, optimizer_name):
  """0.5 * weight_decay * sum |w|^2 over the decaying variables, or None (adamw decays itself; wd 0 is off)."""
  if not weight_decay or optimizer_name == "adamw":
    return None
  terms = [tf.nn.l2_loss(v) for v in variables if decays(v)]
  return weight_decay * tf.add_n(terms) if terms else None
