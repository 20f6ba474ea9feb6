"""Everything Ascend: the only module that imports npu_bridge (Huawei's TensorFlow adapter for Ascend NPUs).

What the trainer asks of it, in the order it asks:
  available()                      does npu_bridge import here?
  add_npu_options(config, ...)     adds the NpuOptimizer custom graph optimizer with our options, and turns
                                   grappler's remapping and memory optimisation off (as the ModelZoo TF scripts do)
  loss_scale_optimizer(opt, ...)   NPULossScaleOptimizer with ExponentialUpdate- or FixedLossScaleManager
  hccl_allreduce_sum(tensor)       hccl_ops.allreduce(tensor, "sum"): the data-parallel seam's engine on the NPU
  hccl_broadcast(tensor)           hccl_ops.broadcast([tensor], root_rank=0)[0] (assigned to the variable after
                                   the initializer, as the ModelZoo scripts do)
  set_iterations_per_loop(...)     util.set_iteration_per_loop: the device repeats the step N times per sess.run
  kernel_set()                     vit_raw.kernels' NPU set: npu_unary_ops.gelu for the GELU, npu_ops.dropout
The gradient all-reduce is the seam's (launch/distributed.py), not NPUDistributedOptimizer's: that wrapper reads
RANK_SIZE itself and passes gradients through unreduced when it is unset, which the trainer cannot see.
The tests run this against a stand-in package (tests/fake_npu_bridge), never against Ascend's code.
"""
import json

import tensorflow.compat.v1 as tf
from tensorflow.core.protobuf.rewriter_config_pb2 import RewriterConfig

_STATE = {}


def _import():
  if "modules" not in _STATE:
    try:
      # Importing npu_bridge registers the NPU ops and the NpuOptimizer graph pass with TensorFlow.
      import npu_bridge  # pylint: disable=g-import-not-at-top,unused-import
      from npu_bridge.estimator.npu import util  # pylint: disable=g-import-not-at-top
      from npu_bridge.estimator.npu import npu_loss_scale_manager  # pylint: disable=g-import-not-at-top
      from npu_bridge.estimator.npu import npu_loss_scale_optimizer  # pylint: disable=g-import-not-at-top
      from npu_bridge.estimator.npu import npu_optimizer  # pylint: disable=g-import-not-at-top
      _STATE["modules"] = (util, npu_loss_scale_manager, npu_loss_scale_optimizer, npu_optimizer)
      _STATE["error"] = None
    except ImportError as e:
      _STATE["modules"] = None
      _STATE["error"] = str(e)
  return _STATE["modules"]


def available():
  """True when npu_bridge and its estimator modules import."""
  return _import() is not None


def import_error():
  """Why npu_bridge did not import (or None)."""
  _import()
  return _STATE.get("error")


def _modules():
  modules = _import()
  if modules is None:
    raise RuntimeError("npu_bridge is not available: %s" % import_error())
  return modules


def add_npu_options(config, precision_mode, iterations_per_loop, over_dump=False, over_dump_path=None, data_dump=False,
                    data_dump_path=None, data_dump_steps=(), profiling=False, profiling_options=None,
                    fusion_switch_file=None, distributed=False):
  """Returns `config` (a tf.ConfigProto) set up for the NPU.

  The NpuOptimizer options: use_off_line (run on the Ascend device), precision_mode as given, iterations_per_loop
  equal to the value passed to set_iterations_per_loop, enable_data_pre_proc (the tf.data pipeline's GetNext is
  offloaded so the device loop can pull batches), mix_compile_mode False (the whole graph sinks to the device), and
  the debugging options: enable_dump_debug/dump_debug_mode (overflow dump), enable_dump/dump_path/dump_step/dump_mode
  (data dump), profiling_mode/profiling_options, fusion_switch_file; with several ranks hcom_parallel (the
  gradient all-reduces run in parallel with the rest of the step).
  """
  _modules()
  custom_op = config.graph_options.rewrite_options.custom_optimizers.add()
  custom_op.name = "NpuOptimizer"
  params = custom_op.parameter_map
  params["use_off_line"].b = True
  params["precision_mode"].s = tf.compat.as_bytes(precision_mode)
  params["iterations_per_loop"].i = int(iterations_per_loop)
  params["enable_data_pre_proc"].b = True
  params["mix_compile_mode"].b = False
  if over_dump:
    params["enable_dump_debug"].b = True
    params["dump_debug_mode"].s = tf.compat.as_bytes("all")
    params["dump_path"].s = tf.compat.as_bytes(over_dump_path)
  if data_dump:
    params["enable_dump"].b = True
    params["dump_path"].s = tf.compat.as_bytes(data_dump_path)
    params["dump_step"].s = tf.compat.as_bytes("|".join(str(s) for s in data_dump_steps))
    params["dump_mode"].s = tf.compat.as_bytes("all")
  if profiling:
    params["profiling_mode"].b = True
    params["profiling_options"].s = tf.compat.as_bytes(profiling_options)
  if fusion_switch_file:
    params["fusion_switch_file"].s = tf.compat.as_bytes(fusion_switch_file)
  if distributed:
    params["hcom_parallel"].b = True
  # The adapter does its own fusions and memory planning; grappler's versions conflict with them.
  config.graph_options.rewrite_options.remapping = RewriterConfig.OFF
  config.graph_options.rewrite_options.memory_optimization = RewriterConfig.OFF
  return config


def default_profiling_options(output_dir):
  """The profiling JSON the trainer uses when --profiling_options is not given."""
  return json.dumps({
      "output": output_dir,
      "training_trace": "on",
      "task_trace": "on",
      "aicpu": "on",
      "fp_point": "",
      "bp_point": ""
  })


def loss_scale_optimizer(optimizer, mode, initial_scale, growth_steps, is_distributed=False):
  """Wraps `optimizer` in NPULossScaleOptimizer: dynamic -> ExponentialUpdateLossScaleManager (halve on the first
  overflow, double after `growth_steps` good steps), fixed -> FixedLossScaleManager(initial_scale)."""
  _, manager_lib, optimizer_lib, _ = _modules()
  if mode == "dynamic":
    manager = manager_lib.ExponentialUpdateLossScaleManager(init_loss_scale=initial_scale,
                                                            incr_every_n_steps=growth_steps, decr_every_n_nan_or_inf=1,
                                                            decr_ratio=0.5)
  elif mode == "fixed":
    manager = manager_lib.FixedLossScaleManager(loss_scale=initial_scale)
  else:
    raise ValueError("NPU loss scale mode must be dynamic or fixed, got %r" % mode)
  return optimizer_lib.NPULossScaleOptimizer(optimizer, manager, is_distributed=is_distributed)


def loss_scale_of(optimizer):
  """The current loss scale tensor of an NPULossScaleOptimizer (its manager's get_loss_scale()), or None."""
  manager = getattr(optimizer, "_loss_scale_manager", None)
  if manager is None or not hasattr(manager, "get_loss_scale"):
    return None
  return manager.get_loss_scale()


def _hccl_ops():
  _modules()
  from npu_bridge.hccl import hccl_ops  # pylint: disable=g-import-not-at-top
  return hccl_ops


def hccl_allreduce_sum(tensor):
  """The sum of `tensor` over every rank (HCCL). fusion=0: the seam already packs gradients into buckets."""
  return _hccl_ops().allreduce(tensor, "sum", fusion=0)


def hccl_broadcast(tensor, root_rank=0):
  """`tensor` as rank `root_rank` has it (HCCL broadcast takes and returns a list of tensors)."""
  return _hccl_ops().broadcast([tensor], root_rank=root_rank)[0]


def kernel_set(lean_backward=True):
  """The model's kernels on the NPU (vit_raw.kernels.for_backend("npu")) with Ascend's GELU and dropout ops, as the
  Ascend TF migration guide replaces them: npu_unary_ops.gelu (tanh form) and npu_ops.dropout; lean_backward: the
  hand-written layer-norm and attention gradients (Ascend's GELU has its own)."""
  _modules()
  from npu_bridge.estimator import npu_ops  # pylint: disable=g-import-not-at-top
  from npu_bridge.estimator.npu_unary_ops import npu_unary_ops  # pylint: disable=g-import-not-at-top
  from vit_raw import kernels  # pylint: disable=g-import-not-at-top
  return kernels.for_backend("npu", npu_gelu=npu_unary_ops.gelu, npu_dropout=npu_ops.dropout,
                             lean_backward=lean_backward)


def set_iterations_per_loop(sess, train_op, iterations_per_loop):
  """Makes one sess.run(train_op) run `iterations_per_loop` steps on the device; returns the op to run."""
  if iterations_per_loop <= 1:
    return train_op
  return _modules()[0].set_iteration_per_loop(sess, train_op, int(iterations_per_loop))
