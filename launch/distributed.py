"""Data parallelism: which engine and rank this process is, and the seam the training graph calls.

`resolve_engine` turns --distribute, --rank/--num_ranks and the environment a launcher set (horovodrun's
HOROVOD_RANK, TF_CONFIG, Ascend's RANK_ID/RANK_SIZE/RANK_TABLE_FILE) into one engine of launch/engines.py, or says
in one line what does not fit. `DataParallel` is the seam, the only place the training graph meets the engine:

  allreduce_gradients(grads, scalars)  right after the per-variable gradient sums of a step (in the in-graph N-step
                                       loop and in the one-step graph alike), before unscaling, the finite check and
                                       clipping: an inf on one rank reaches every rank, so all ranks skip that step
                                       together, and clipping sees the averaged gradient. The gradients go in few
                                       collectives: packed into buckets of at most `bucket_mb`, last layers first
                                       (backprop produces them first, so a bucket can start while the rest is
                                       still being computed).
  broadcast_variables(variables)       rank 0's values to every rank; run after initialisation and after a restore
                                       (weights, slots, global step, loss scale, best accuracy).
  allreduce_sum(tensor)                sums over the ranks (evaluation counts).
  agreement(), weights_spread()        the checks that ranks run the same plan and hold the same weights.
"""
import collections
import json
import os

import numpy as np
import tensorflow.compat.v1 as tf

from launch import engines
from launch import errors

DISTRIBUTE_CHOICES = ("auto", "none", "horovod", "collective", "hccl")
# Measured (docs/benchmarks.md): TF's collectives over gRPC move 4 MB buffers 2.5x faster than 64 MB ones; Horovod
# fuses and splits by itself and is indifferent; HCCL is best fed few large buffers.
DEFAULT_BUCKET_MB = {"collective": 4.0, "horovod": 64.0, "hccl": 64.0, "single": 64.0}
_LAUNCHERS = ("start the ranks with `python -m launch.spawn --num_ranks N -- <launch.train flags>`, horovodrun, or "
              "one TF_CONFIG per process (docs/training.md, Data parallelism)")


class RankMismatch(errors.RunStopped):
  """Ranks that would not run the same collectives (different plans, steps or data); the message is one line."""


class RankLost(errors.RunStopped):
  """A collective failed because a rank went away; the message is one line naming it."""


def _env_int(environ, name):
  value = environ.get(name, "")
  if not value.strip():
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError("%s=%s is not an integer" % (name, value))


def rank_table_devices(path):
  """The rank_ids of an Ascend rank table (version 1.0: server_list[].device[].rank_id); raises ValueError."""
  try:
    with open(path) as f:
      table = json.load(f)
    return sorted(int(d["rank_id"]) for server in table["server_list"] for d in server["device"])
  except (OSError, IOError) as e:
    raise ValueError("RANK_TABLE_FILE=%s cannot be read (%s)" % (path, e.strerror or e))
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError("RANK_TABLE_FILE=%s is not an Ascend rank table with server_list[].device[].rank_id (%s: %s)" %
                     (path, type(e).__name__, e))


def _auto_engine(device, num_ranks, environ):
  if device == "npu":
    return "hccl" if max(num_ranks or 1, _env_int(environ, "RANK_SIZE") or 1) > 1 else "none"
  if "HOROVOD_RANK" in environ or (_env_int(environ, "OMPI_COMM_WORLD_SIZE") or 1) > 1:
    return "horovod"
  if environ.get("TF_CONFIG"):
    return "collective"
  return "none"


def resolve_engine(distribute, device, rank=None, num_ranks=None, environ=None):
  """The engine of this process (launch.engines), its rank and size checked against --rank/--num_ranks and the
  launcher's environment. Raises ValueError with the one line a user sees."""
  environ = os.environ if environ is None else environ
  name = _auto_engine(device, num_ranks, environ) if distribute == "auto" else distribute
  env_rank, env_size = _env_int(environ, "RANK_ID"), _env_int(environ, "RANK_SIZE")
  if name == "none":
    size = num_ranks if num_ranks is not None else (env_size or 1)
    if size > 1:
      given = "--num_ranks=%d" % size if num_ranks is not None else "RANK_SIZE=%d" % size
      raise ValueError("%s on %s needs a data-parallel engine (without one every process would train alone): %s" %
                       (given, device, _LAUNCHERS))
    index = rank if rank is not None else (env_rank or 0)
    if index != 0:
      raise ValueError("rank %d is outside [0, 1): check --rank/--num_ranks or RANK_ID/RANK_SIZE" % index)
    engine, source = engines.Single(), "one process"
  elif name == "hccl":
    engine, source = _hccl(device, environ, env_rank, env_size), "RANK_ID/RANK_SIZE"
  elif device == "npu":
    raise ValueError("--distribute=%s does not run on the NPU: use --distribute=hccl (or auto)" % name)
  elif name == "horovod":
    try:
      hvd_engine = engines.Horovod()
    except ImportError as e:
      raise ValueError("--distribute=horovod: Horovod does not import (%s); install it into this environment (make "
                       "setup-horovod, TF 1.15 stack) or use --distribute=collective" % e)
    engine, source = hvd_engine, "horovodrun"
  elif name == "collective":
    try:
      workers, index = engines.read_tf_config(environ.get("TF_CONFIG", ""))
    except ValueError as e:
      raise ValueError("--distribute=collective: %s; %s" % (e, _LAUNCHERS))
    engine, source = engines.Collective(workers, index, "cpu" if device == "cpu" else "gpu"), "TF_CONFIG"
  else:
    raise ValueError("--distribute=%s is not one of %s" % (name, ", ".join(DISTRIBUTE_CHOICES)))
  for what, given, actual in (("--num_ranks", num_ranks, engine.size), ("--rank", rank, engine.rank),
                              ("RANK_SIZE", env_size if name != "none" else None,
                               engine.size), ("RANK_ID", env_rank if name != "none" else None, engine.rank)):
    if given is not None and given != actual:
      raise ValueError("%s=%d disagrees with %s, which makes this process rank %d of %d" %
                       (what, given, source, engine.rank, engine.size))
  return engine


def _hccl(device, environ, env_rank, env_size):
  if device != "npu":
    raise ValueError("--distribute=hccl needs the NPU (--device=npu); on %s use collective or horovod" % device)
  if env_size is None or env_rank is None:
    raise ValueError("the NPU takes its ranks from RANK_ID and RANK_SIZE as HCCL does (npu_bridge's gradient "
                     "all-reduce is a no-op without RANK_SIZE): export RANK_SIZE, RANK_ID and RANK_TABLE_FILE, e.g. "
                     "with launch/train_full_8p.sh")
  if not 0 <= env_rank < env_size:
    raise ValueError("RANK_ID=%d is outside [0, RANK_SIZE=%d)" % (env_rank, env_size))
  table = environ.get("RANK_TABLE_FILE", "")
  if env_size > 1:
    if not table:
      raise ValueError("RANK_SIZE=%d but RANK_TABLE_FILE is not set: HCCL needs the rank table (configs/8p.json "
                       "shows the format)" % env_size)
    ranks = rank_table_devices(table)
    if ranks != list(range(env_size)):
      raise ValueError("RANK_TABLE_FILE=%s lists rank_ids %s, not 0..%d for RANK_SIZE=%d" %
                       (table, ranks, env_size - 1, env_size))
  return engines.Hccl(env_rank, env_size)


def _numel(tensor):
  return int(np.prod(tensor.shape.as_list()))


def _buckets(tensors, limit_bytes):
  """Consecutive runs of `tensors` of one dtype holding at most `limit_bytes` each (a larger tensor alone); a
  limit of 0 gives one bucket per tensor. Returns lists of indices."""
  out, size = [], 0
  for i, t in enumerate(tensors):
    nbytes = _numel(t) * t.dtype.size
    if out and limit_bytes > 0 and tensors[out[-1][-1]].dtype == t.dtype and size + nbytes <= limit_bytes:
      out[-1].append(i)
      size += nbytes
    else:
      out.append([i])
      size = nbytes
  return out


def packed(tensors, fn, limit_bytes):
  """fn applied to flat buffers made of `tensors` (buckets of at most limit_bytes of one dtype); returns the results
  cut back into the tensors' shapes, in their order."""
  results = [None] * len(tensors)
  for bucket in _buckets(tensors, limit_bytes):
    parts = [tensors[i] for i in bucket]
    if len(parts) == 1:
      results[bucket[0]] = tf.reshape(fn(tf.reshape(parts[0], [-1])), parts[0].shape)
      continue
    flat = fn(tf.concat([tf.reshape(p, [-1]) for p in parts], 0))
    for i, piece in zip(bucket, tf.split(flat, [_numel(p) for p in parts])):
      results[i] = tf.reshape(piece, tensors[i].shape)
  return results


# The run facts every rank must agree on before the first collective (launch.train fills them).
AGREEMENT_FIELDS = ("start step", "total steps", "steps per sess.run", "steps per epoch", "micro-batches per step",
                    "batch per rank", "training examples", "test examples", "classes", "parameters", "flags")


class DataParallel(object):
  """The seam between the training graph and an engine (see the module docstring).

  Attributes:
    engine: the launch.engines engine.
    rank, size: this process's rank and the number of ranks.
    bucket_bytes: the largest packed buffer of one all-reduce (0: one collective per tensor).
  """

  def __init__(self, engine, bucket_mb=None):
    self.engine = engine
    self.rank, self.size = engine.rank, engine.size
    self.bucket_bytes = int((DEFAULT_BUCKET_MB[engine.name] if bucket_mb is None else bucket_mb) * 2**20)
    self._agreement = None

  @property
  def active(self):
    return self.size > 1

  def allreduce_gradients(self, grads, scalars=()):
    """(grads, scalars) averaged over the ranks; None gradients stay None. The scalars (e.g. the step's loss) ride
    in the first bucket, so every rank logs the same global-batch loss."""
    scalars = list(scalars)
    if not self.active:
      return grads, scalars
    present = [i for i, g in enumerate(grads) if g is not None]
    # Backprop yields the last layers' gradients first: pack them first so the first buckets can start early.
    order = list(reversed(present))
    tensors = [tf.cast(s, tf.float32) for s in scalars] + [grads[i] for i in order]
    inverse = 1.0 / self.size
    reduced = packed(tensors, lambda t: self.engine.allreduce(t) * tf.cast(inverse, t.dtype), self.bucket_bytes)
    out = list(grads)
    for i, r in zip(order, reduced[len(scalars):]):
      out[i] = r
    return out, reduced[:len(scalars)]

  def allreduce_sum(self, tensor):
    return self.engine.allreduce(tensor) if self.active else tensor

  def broadcast_variables(self, variables):
    """An op setting every variable to rank 0's value (a no-op with one rank). float32 variables travel packed;
    the others (global step, counters) as float64, exact below 2^53."""
    if not self.active or not variables:
      return tf.no_op(name="broadcast_variables")
    values = [tf.convert_to_tensor(v) for v in variables]
    values = [x if x.dtype == tf.float32 else tf.cast(x, tf.float64) for x in values]
    received = packed(values, self.engine.broadcast, self.bucket_bytes)
    assigns = [v.assign(tf.cast(r, v.dtype.base_dtype)) for v, r in zip(variables, received)]
    return tf.group(*assigns, name="broadcast_variables")

  def weights_spread(self, variables):
    """A float32 scalar: the largest |w - w on rank 0| over every variable and rank, summed over ranks (0 when all
    ranks hold bitwise the same weights)."""
    if not self.active:
      return tf.constant(0.0)
    values = [tf.convert_to_tensor(v) for v in variables]
    root = packed(values, self.engine.broadcast, self.bucket_bytes)
    local = tf.reduce_max(tf.stack([tf.reduce_max(tf.abs(a - b)) for a, b in zip(values, root)]))
    return self.engine.allreduce(local)

  def build_agreement(self):
    """Builds the agreement check (call while building the graph, so every rank builds it at the same point)."""
    self._agreement = tf.placeholder(tf.float64, [len(AGREEMENT_FIELDS)], name="agreement_fields")
    self._agreement_sums = self.allreduce_sum(tf.concat([self._agreement, self._agreement**2], 0))

  def check_agreement(self, sess, values):
    """Raises RankMismatch naming the fields whose `values` (one number per AGREEMENT_FIELDS, integers below 2^26)
    differ between ranks. Every rank computes the same verdict from the same sums, so all stop or none."""
    if not self.active:
      return
    local = np.asarray(values, np.float64)
    sums = sess.run(self._agreement_sums, {self._agreement: local})
    n = len(AGREEMENT_FIELDS)
    mean = sums[:n] / self.size
    spread = sums[n:] / self.size - mean**2
    bad = [i for i in range(n) if spread[i] > 1e-6 * max(1.0, mean[i]**2)]
    if bad:
      raise RankMismatch(
          "the %d ranks disagree on %s (this rank %d: %s; mean over ranks: %s): every rank must use the same flags "
          "and data and restore the same checkpoint (one --model_dir that every rank sees)" %
          (self.size, ", ".join(AGREEMENT_FIELDS[i] for i in bad), self.rank, ", ".join(
              "%g" % local[i] for i in bad), ", ".join("%g" % mean[i] for i in bad)))


def flags_fingerprint(lines):
  """A number below 2^24 standing for a list of flag lines (the same lines give the same number everywhere)."""
  digest = 0
  for ch in "\n".join(sorted(lines)):
    digest = (digest * 131 + ord(ch)) % 16777213
  return digest


Layout = collections.namedtuple("Layout", ["per_rank", "accum_steps", "num_ranks"])
Layout.__doc__ = """The global batch: per-rank micro-batch x micro-batches per step x ranks.

Attributes:
  per_rank: --train_batch_size, the micro-batch one device holds.
  accum_steps: micro-batches accumulated into one optimizer step (--accum_steps).
  num_ranks: data-parallel ranks.
"""


def describe_global_batch(layout):
  """'512 = 32 per rank x 4 micro-batches x 4 ranks' (terms equal to 1 left out)."""
  total = layout.per_rank * layout.accum_steps * layout.num_ranks
  terms = ["%d per rank" % layout.per_rank]
  if layout.accum_steps > 1:
    terms.append("%d micro-batches" % layout.accum_steps)
  if layout.num_ranks > 1:
    terms.append("%d ranks" % layout.num_ranks)
  return "%d = %s" % (total, " x ".join(terms)) if len(terms) > 1 else str(total)
