"""Stand-in (not Ascend's code): a pass-through optimizer wrapper that records how it was built and used."""
import tensorflow.compat.v1 as tf

import npu_bridge


class NPULossScaleOptimizer(tf.train.Optimizer):

  def __init__(self, opt, loss_scale_manager, is_distributed=False):
    super(NPULossScaleOptimizer, self).__init__(use_locking=False, name="NPULossScaleOptimizer")
    self._opt = opt
    self._loss_scale_manager = loss_scale_manager
    npu_bridge.record("NPULossScaleOptimizer", opt=opt, loss_scale_manager=loss_scale_manager,
                      is_distributed=is_distributed)

  def compute_gradients(self, loss, var_list=None, **kwargs):
    npu_bridge.record("NPULossScaleOptimizer.compute_gradients", num_vars=len(var_list or []))
    return self._opt.compute_gradients(loss, var_list=var_list, **kwargs)

  def apply_gradients(self, grads_and_vars, global_step=None, name=None):
    npu_bridge.record("NPULossScaleOptimizer.apply_gradients", global_step=global_step)
    return self._opt.apply_gradients(grads_and_vars, global_step=global_step, name=name)
