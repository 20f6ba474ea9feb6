"""vit_raw.cpu_config: the session options the trainer and tools share."""
import os
import subprocess
import sys

import pytest
import tensorflow.compat.v1 as tf

from vit_raw import cpu_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_defaults_use_all_cores_one_op_at_a_time_and_no_xla():
  config = cpu_config.fast_cpu_config()
  assert config.intra_op_parallelism_threads == len(os.sched_getaffinity(0))  # the cores this process may use
  assert config.inter_op_parallelism_threads == 1
  assert config.graph_options.optimizer_options.global_jit_level == tf.OptimizerOptions.DEFAULT


def test_explicit_threads_and_xla_are_honoured():
  config = cpu_config.fast_cpu_config(intra_op_threads=3, inter_op_threads=2, xla=True)
  assert (config.intra_op_parallelism_threads, config.inter_op_parallelism_threads) == (3, 2)
  assert config.graph_options.optimizer_options.global_jit_level == tf.OptimizerOptions.ON_1


_XLA_PROBE = """
import tensorflow.compat.v1 as tf
tf.disable_v2_behavior()
from vit_raw import cpu_config
x = tf.Variable(tf.ones([8, 8]))
y = tf.reduce_sum(tf.sigmoid(tf.matmul(x, x) * 2.0 + 1.0))
options = tf.RunOptions(trace_level=tf.RunOptions.FULL_TRACE)
metadata = tf.RunMetadata()
with tf.Session(config=cpu_config.fast_cpu_config(xla=XLA)) as sess:
  sess.run(tf.global_variables_initializer())
  sess.run(y, options=options, run_metadata=metadata)
print("XLA_RUN" if any("xla_run" in n.node_name for d in metadata.step_stats.dev_stats for n in d.node_stats)
      else "NO_XLA")
"""


@pytest.mark.parametrize("xla", [True, False])
def test_xla_config_really_compiles_on_cpu_in_a_fresh_process(xla):
  # global_jit_level alone is ignored on CPU; the trace must show an XLA cluster running (and none without xla).
  # A fresh process, because TF reads TF_XLA_FLAGS once, at its first session.
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
  env.pop("TF_XLA_FLAGS", None)
  out = subprocess.run([sys.executable, "-c", _XLA_PROBE.replace("XLA)", "%s)" % xla)], env=env, cwd=ROOT,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=300)
  assert out.stdout.strip().splitlines()[-1] == ("XLA_RUN" if xla else "NO_XLA"), out.stderr[-2000:]
