"""One rank of a tiny data-parallel training graph, for tests/test_distributed_ranks.py (run as a process per rank).

  python -m tests.distributed_worker ENGINE POISON_RANK

Builds the trainer's N-step loop (launch.train_graph) on in-memory batches (each rank its own data) with dynamic loss
scaling and the data-parallel seam over ENGINE (collective: TF_CONFIG; horovod: under horovodrun), broadcasts rank
0's variables, then runs 2 steps, 1 step in which rank POISON_RANK alone multiplies its logits by inf, and 2 more
steps. Prints one JSON line: rank, skipped steps, loss scale, global step and a digest of every trainable weight.
"""
import hashlib
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_DISABLE_MKL", "1")

import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402


def main(engine_name, poison_rank):
  tf.disable_v2_behavior()
  from launch import distributed  # pylint: disable=g-import-not-at-top
  from launch import plan as plan_lib  # pylint: disable=g-import-not-at-top
  from launch import train_graph  # pylint: disable=g-import-not-at-top
  from tests import graph_helpers  # pylint: disable=g-import-not-at-top
  from vit_raw.model_input import scale_input  # pylint: disable=g-import-not-at-top
  from vit_raw.configs import get_config  # pylint: disable=g-import-not-at-top
  from vit_raw.model import vit  # pylint: disable=g-import-not-at-top

  engine = distributed.resolve_engine(engine_name, "cpu")
  parallel = distributed.DataParallel(engine, bucket_mb=0.01)  # small buckets: several all-reduces per step
  config = engine.configure(tf.ConfigProto())
  if hasattr(engine, "start"):
    engine.start(config)
  with tf.device(engine.device):
    tf.set_random_seed(0)
    model_config = get_config("tiny", hidden_size=16, num_layers=1, num_heads=2, mlp_dim=32)
    poison = tf.Variable(1.0, trainable=False, use_resource=True, name="poison")

    def model_fn(images, is_training, rng_seed=None):
      logits = vit(scale_input(images, tf.float32), model_config, graph_helpers.NUM_CLASSES, is_training)
      return logits * poison.read_value()

    plan = plan_lib.synthetic_plan(model_config, graph_helpers.SIZE, graph_helpers.NUM_CLASSES, graph_helpers.BATCH,
                                   iterations=5, lr=0.05, loss_scale="dynamic", loss_scale_init=1024.0)
    train_graph.create_model_variables(plan, model_fn)
    iterator = tf.data.make_initializable_iterator(graph_helpers.fake_batches(seed=engine.rank))
    loop = train_graph.build_training(plan, train_graph.BatchSource(iterator), parallel, model_fn=model_fn).loop
    broadcast = parallel.broadcast_variables(tf.global_variables())
  with tf.Session(engine.target, config=config) as sess:
    sess.run([tf.global_variables_initializer(), iterator.initializer])
    sess.run(broadcast)
    for steps, value in ((2, 1.0), (1, float("inf") if engine.rank == poison_rank else 1.0), (2, 1.0)):
      sess.run(poison.assign(value))
      out = sess.run(loop.fetches, {loop.iterations: steps})
    digest = hashlib.sha256()
    for v in sorted(tf.trainable_variables(), key=lambda v: v.op.name):
      digest.update(np.ascontiguousarray(sess.run(v)).tobytes())
    print(
        json.dumps({
            "rank": engine.rank,
            "skipped": int(out["skipped"]),
            "loss_scale": float(out["loss_scale"]),
            "global_step": int(out["global_step"]),
            "digest": digest.hexdigest()
        }))
    sys.stdout.flush()
    del parts
  time.sleep(1.0)  # the peer may still be pulling this rank's share of the last all-reduce


if __name__ == "__main__":
  main(sys.argv[1], int(sys.argv[2]))
