"""Stand-in (not Ascend's code): records set_iteration_per_loop and returns the op unchanged."""
import npu_bridge


def set_iteration_per_loop(sess, train_op, iterations_per_loop):
  npu_bridge.record("set_iteration_per_loop", sess=sess, train_op=train_op, iterations_per_loop=iterations_per_loop)
  return train_op
