"""The engines behind the data-parallel seam (launch/distributed.py): each one sums a tensor over the ranks and
broadcasts one from rank 0, in the graph.

  single      one process: both are the identity.
  horovod     Horovod (TF 1.15 stack; gloo on CPU, NCCL on GPU), started by horovodrun; rank and size from
              hvd.rank()/hvd.size() after hvd.init().
  collective  TensorFlow's own collective ops between tf.train.Server tasks, the cluster from TF_CONFIG (both stacks).
  hccl        Ascend's HCCL through npu_bridge's hccl_ops (launch/npu.py); ranks from RANK_ID/RANK_SIZE and the
              rank table in RANK_TABLE_FILE, as HCCL reads them.

An engine also says where the graph must live (`device`), which session target to use (`target`), what the session
config needs (`configure`) and which peers a watchdog can poll (`peers`).
"""
import json
import os

import tensorflow.compat.v1 as tf

ENGINE_NAMES = ("single", "horovod", "collective", "hccl")


class Single(object):
  """One process: nothing to reduce."""
  name = "single"
  rank, size = 0, 1
  device = None
  target = ""

  def allreduce(self, tensor):
    return tensor

  def broadcast(self, tensor):
    return tensor

  def configure(self, config):
    return config

  def peers(self):
    return {}


def horovod_module():
  """horovod.tensorflow, or raises ImportError naming why (not installed, or built for another TensorFlow)."""
  import horovod.tensorflow as hvd  # pylint: disable=g-import-not-at-top
  return hvd


class Horovod(object):
  """Horovod's allreduce/broadcast ops (gloo or NCCL underneath). horovodrun starts the processes and stops all of
  them when one fails.

  Attributes:
    rank, size: hvd.rank(), hvd.size().
  """
  name = "horovod"
  device = None
  target = ""

  def __init__(self):
    self._hvd = horovod_module()
    self._hvd.init()
    self.rank, self.size = self._hvd.rank(), self._hvd.size()

  def allreduce(self, tensor):
    return self._hvd.allreduce(tensor, op=self._hvd.Sum)

  def broadcast(self, tensor):
    return self._hvd.broadcast(tensor, 0)

  def configure(self, config):
    if not ("GPU" in config.device_count and config.device_count["GPU"] == 0):
      config.gpu_options.visible_device_list = str(self._hvd.local_rank())  # one GPU per process
    return config

  def peers(self):
    return {}  # horovodrun watches the processes and ends the job when one dies


def read_tf_config(text=None):
  """(worker addresses, this task's index) from TF_CONFIG (or `text`); raises ValueError saying what is wrong."""
  text = os.environ.get("TF_CONFIG", "") if text is None else text
  if not text:
    raise ValueError("TF_CONFIG is not set")
  try:
    config = json.loads(text)
    workers = list(config["cluster"]["worker"])
    task = config["task"]
    index = int(task["index"])
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError("TF_CONFIG is not {\"cluster\": {\"worker\": [\"host:port\", ...]}, \"task\": {\"type\": "
                     "\"worker\", \"index\": i}} (%s: %s)" % (type(e).__name__, e))
  if task.get("type", "worker") != "worker" or set(config["cluster"]) - {"worker"}:
    raise ValueError("TF_CONFIG must have one job named worker (no chief or ps): every rank trains")
  if not 0 <= index < len(workers):
    raise ValueError("TF_CONFIG task index %d is outside its %d workers" % (index, len(workers)))
  return workers, index


class Collective(object):
  """TensorFlow's collective ops (ring all-reduce, broadcast) between the tf.train.Server of every rank.

  Every op of the run is placed on this task (`device`): the session only sees this task's devices
  (device_filters), and task 0 leads the collective groups. Instance keys are handed out in graph-building order,
  which is the same on every rank because every rank builds the same graph.

  Attributes:
    rank, size: this task's index and the number of workers in TF_CONFIG.
    workers: the workers' host:port addresses.
  """
  name = "collective"
  _GROUP_KEY = 1

  def __init__(self, workers, rank, device_type="cpu"):
    self.workers, self.rank, self.size = list(workers), int(rank), len(workers)
    task = "/job:worker/replica:0/task:%d" % self.rank
    self.device = task + "/device:CPU:0" if device_type == "cpu" else task
    self._next_key = 0
    self._server = None

  def _key(self):
    self._next_key += 1
    return self._next_key

  def configure(self, config):
    config.experimental.collective_group_leader = "/job:worker/replica:0/task:0"
    del config.device_filters[:]
    config.device_filters.append("/job:worker/task:%d" % self.rank)
    return config

  def start(self, config):
    """Starts this rank's server (the others connect to it); call once, before the session."""
    cluster = tf.train.ClusterSpec({"worker": self.workers})
    self._server = tf.train.Server(cluster, job_name="worker", task_index=self.rank, config=config, start=True)

  @property
  def target(self):
    return self._server.target if self._server is not None else ""

  def allreduce(self, tensor):
    from tensorflow.python.ops import collective_ops  # pylint: disable=g-import-not-at-top
    with tf.device(self.device):
      return collective_ops.all_reduce(tf.identity(tensor), self.size, self._GROUP_KEY, self._key(), "Add", "Id")

  def broadcast(self, tensor):
    from tensorflow.python.ops import collective_ops  # pylint: disable=g-import-not-at-top
    key = self._key()
    with tf.device(self.device):
      if self.rank == 0:
        return collective_ops.broadcast_send(tf.identity(tensor), tensor.shape, tensor.dtype, self.size,
                                             self._GROUP_KEY, key)
      return collective_ops.broadcast_recv(tensor.shape, tensor.dtype, self.size, self._GROUP_KEY, key)

  def peers(self):
    """{rank: (host, port)} of the other workers (their servers answer as long as they live)."""
    out = {}
    for rank, address in enumerate(self.workers):
      if rank != self.rank:
        host, port = address.rsplit(":", 1)
        out[rank] = (host, int(port))
    return out


class Hccl(object):
  """Ascend HCCL through npu_bridge's hccl_ops (allreduce "sum"; broadcast from root_rank 0, then assign).

  Attributes:
    rank, size: RANK_ID and RANK_SIZE, checked against the rank table by launch.distributed.
  """
  name = "hccl"
  device = None
  target = ""

  def __init__(self, rank, size):
    self.rank, self.size = int(rank), int(size)

  def allreduce(self, tensor):
    from launch import npu  # pylint: disable=g-import-not-at-top
    return npu.hccl_allreduce_sum(tensor)

  def broadcast(self, tensor):
    from launch import npu  # pylint: disable=g-import-not-at-top
    return npu.hccl_broadcast(tensor, root_rank=0)

  def configure(self, config):
    return config  # hcom_parallel is one of the NPU options (launch.npu.add_npu_options)

  def peers(self):
    return {}  # HCCL has its own timeouts (HCCL_CONNECT_TIMEOUT, HCCL_EXEC_TIMEOUT)
