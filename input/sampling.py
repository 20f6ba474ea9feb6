"""Which examples form global batch k: per-epoch shuffle, rank sharding, eval padding, per-example seeds.

Everything is a pure function of (seed, epoch, index), so the batches are identical whatever the worker count and
a resumed run (start_batch) sees exactly what an uninterrupted run would.

Train: every epoch permutes all N examples with numpy's Generator seeded by (seed, epoch); rank r takes every
num_ranks-th element from position r and keeps the first N // num_ranks, so ranks are disjoint within an epoch and
together cover all but N mod num_ranks examples; steps_per_epoch = (N // num_ranks) // batch (last partial dropped).
Eval: rank r takes examples r, r + num_ranks, ... in order; every rank runs ceil(ceil(N / num_ranks) / batch)
steps (the same number on every rank, so collective ops line up), padding with masked rows.
Mixing partners (Mixup / CutMix, input/mixing.py): global batch k is the union of the ranks' local batches k, rank
r's local row j at global position r + num_ranks * j; the partner of global position p is position G - 1 - p of the
same global batch (G = num_ranks * batch), as timm mixes a batch with its reverse.
"""
import numpy as np
from input.errors import DataError

_ORDER, _AUGMENT, _REPLACE, _MIX = 1, 2, 3, 4


def rng_for(seed, epoch, purpose, *more):
  """A numpy Generator for one (seed, epoch, purpose, ...) tuple."""
  return np.random.default_rng([int(seed), int(epoch), purpose] + [int(m) for m in more])


def augment_rng(seed, epoch, index, attempt=0):
  """The random stream that augments example `index` in `epoch` (attempt > 0: a replacement for a bad file)."""
  return rng_for(seed, epoch, _AUGMENT, index, attempt)


def mix_rng(seed, epoch, global_batch):
  """The random stream of the mixing decision of global batch k: the same on every rank."""
  return rng_for(seed, epoch, _MIX, global_batch)


def replacement_index(seed, epoch, index, attempt, num_examples):
  """The example that stands in for a corrupt `index` at its `attempt`-th retry (deterministic)."""
  return int(rng_for(seed, epoch, _REPLACE, index, attempt).integers(num_examples))


class BatchPlan(object):
  """The order of examples for one rank.

  Attributes:
    num_examples: examples in this rank's shard.
    steps_per_epoch: batches per epoch (train: full batches only; eval: ceil, last one padded).
  """

  def __init__(self, dataset_size, batch_size, training, seed=0, rank=0, num_ranks=1):
    if not 0 <= rank < num_ranks:
      raise DataError("rank %d is outside 0..%d (num_ranks=%d)" % (rank, num_ranks - 1, num_ranks))
    self.dataset_size = int(dataset_size)
    self.batch_size = int(batch_size)
    self.training = bool(training)
    self.seed, self.rank, self.num_ranks = int(seed), int(rank), int(num_ranks)
    if self.training:
      self.num_examples = self.dataset_size // num_ranks
      self.steps_per_epoch = self.num_examples // self.batch_size
      if self.steps_per_epoch == 0:
        raise DataError("the training shard holds %d examples (%d examples / %d ranks), fewer than one "
                        "batch of %d: use a smaller batch size" %
                        (self.num_examples, self.dataset_size, num_ranks, self.batch_size))
    else:
      self._eval_shard = np.arange(rank, self.dataset_size, num_ranks)
      self.num_examples = len(self._eval_shard)
      longest = -(-self.dataset_size // num_ranks)
      self.steps_per_epoch = max(1, -(-longest // self.batch_size))
    self._cached_epoch, self._cached_shard, self._cached_order = None, None, None

  def epoch_shard(self, epoch):
    """This rank's example indices for `epoch`, in visiting order."""
    if not self.training:
      return self._eval_shard
    if epoch != self._cached_epoch:
      order = rng_for(self.seed, epoch, _ORDER).permutation(self.dataset_size)
      self._cached_shard = order[self.rank::self.num_ranks][:self.num_examples]
      self._cached_order = order
      self._cached_epoch = epoch
    return self._cached_shard

  def batch(self, k):
    """(epoch, indices) of global batch k; eval indices may be shorter than batch_size (padding rows)."""
    epoch, step = divmod(int(k), self.steps_per_epoch)
    start = step * self.batch_size
    return epoch, self.epoch_shard(epoch)[start:start + self.batch_size]

  def partner_rows(self):
    """For each local row j, the local row of the same batch that holds its mixing partner, or -1 when the partner
    lives on another rank (with one rank: row B - 1 - j; with an even number of ranks always another rank)."""
    g = self.num_ranks * self.batch_size
    partner = g - 1 - (self.rank + self.num_ranks * np.arange(self.batch_size))
    return np.where(partner % self.num_ranks == self.rank, partner // self.num_ranks, -1)

  def mix_partners(self, k):
    """(epoch, example indices) of the mixing partners of local batch k's rows: row j's partner is the example at
    the mirrored position of global batch k (training only)."""
    if not self.training:
      raise ValueError("mixing partners exist for training batches only")
    epoch, step = divmod(int(k), self.steps_per_epoch)
    self.epoch_shard(epoch)
    g = self.num_ranks * self.batch_size
    partner = g - 1 - (self.rank + self.num_ranks * np.arange(self.batch_size))
    return epoch, self._cached_order[step * g + partner]
