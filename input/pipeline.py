"""InputPipeline: a Dataset -> uint8 batches in a tf.data.Dataset with static shapes, made by worker processes.

One batch's journey: sampling.BatchPlan says which examples form global batch k; a worker (workers.py) decodes and
augments them (augment.py, batch.py) into a shared-memory slot; the consumer here takes batches in order, copies the
slot into the array handed to tf.data and frees the slot; the graph scales to [-1, 1] (vit_raw/model_input.py).
Training with a mixing.MixSpec: the worker also mixes each batch (Mixup / CutMix, input/mixing.py) and every batch
carries, per row, the partner's label and the weight of the row's own label.
Bad files are logged here (logger input.pipeline), once per file per pipeline: `input: skipped <path>: <reason>`,
and counted per file; every epoch end (train) or eval pass end logs the count so far. TensorFlow is imported only by
tf_dataset(), so the pipeline and its workers also run in a process without it.
"""
import inspect
import logging
import time

import numpy as np

from input import batch as batch_lib
from input import image_codec
from input import mixing
from input import sampling
from input.errors import InputError
from input.augment import Transform
from input.messages import quote
from input import workers as workers_lib
from input.workers import WorkerPool

_log = logging.getLogger(__name__)


class InputPipeline(object):
  """Batches of one dataset for one rank, training (endless, reshuffled) or evaluation (one exact pass).

  Attributes:
    steps_per_epoch: train: floor(shard / batch); eval: ceil(longest shard / batch).
    num_examples: examples in this rank's shard.
    skipped: distinct bad files met so far (train: replaced, eval: masked out) in the batches handed out.
    bad_files: {path: reason} of those files.
    image_size: (height, width).
    mix: the mixing.MixSpec applied (training only), or None; with one, batches are 5-tuples (see batches()).
  """

  def __init__(self, dataset, image_size, batch_size, training, workers=None, seed=0, rank=0, num_ranks=1,
               center_crop=False, start_batch=0, augment="inception", max_pixels=image_codec.DEFAULT_MAX_PIXELS,
               start_method="fork", num_slots=None, padding=4, hflip=None, erase_prob=0.0, randaugment="",
               color_jitter=0.0, mix=None, stall_seconds=None):
    """workers=None uses every core; workers=0 builds batches in the calling thread (debugging).

    augment: an augment.AugmentSpec, or a preset completed by padding / hflip / erase_prob / randaugment /
    color_jitter (input/augment.py). augment="none" trains on the eval resize (still reshuffled every epoch): for
    data that a crop or a mirror destroys, such as the 8x8 digits; augment="crop": pad by `padding` and
    random-crop; hflip: mirror with probability 1/2 (None: the augment's default); erase_prob: random erasing's
    probability; randaugment: a timm spec such as rand-m9-mstd0.5-inc1; color_jitter: strength (0: off).
    mix: a mixing.MixSpec (Mixup / CutMix, training only; None: no mixing and the usual 3-tuples).
    max_pixels: an image whose header declares more pixels is skipped
    as a bad file before it is decoded (None: no budget).
    stall_seconds: a worker stuck that long on one example stops the pipeline with workers.WorkerStalledError
    (None or 0: wait forever; workers=0 cannot be watched).
    """
    self.dataset = dataset
    self.image_size = (int(image_size[0]), int(image_size[1])) if isinstance(image_size, (tuple, list)) else \
        (int(image_size), int(image_size))
    self.batch_size = int(batch_size)
    self.training = bool(training)
    self.seed = int(seed)
    self.start_batch = int(start_batch) if training else 0
    self.plan = sampling.BatchPlan(len(dataset), batch_size, training, seed, rank, num_ranks)
    self.steps_per_epoch = self.plan.steps_per_epoch
    self.num_examples = self.plan.num_examples
    self.skipped = 0
    self.bad_files = {}
    self._passes = 0  # eval passes started
    self._pass_examples = 0  # examples kept in the current eval pass
    self._error = None
    self._transform = Transform(self.image_size, training, center_crop, augment, max_pixels, padding, hflip, erase_prob,
                                randaugment, color_jitter)
    if mix is not None and not isinstance(mix, mixing.MixSpec):
      raise InputError("mix must be a mixing.MixSpec or None, got %r" % (mix,))
    self.mix = mix if self.training else None
    self._partner_rows = self.plan.partner_rows() if self.mix is not None else None
    self.num_workers = workers_lib.usable_cores() if workers is None else int(workers)
    # Seconds the batch generator waited for the workers (None without workers): in steady state, the time the
    # step waited for data (the prefetch buffer only smooths it), the tensorpack rule's empty-queue measure.
    self.wait_seconds = 0.0 if self.num_workers > 0 else None
    self._started = None  # monotonic time of the first batch request
    self._pool = None
    self._slots = None  # free slot list and received-but-not-yet-yielded results, shared by iterators
    if self.num_workers > 0:
      slots = num_slots or 2 * self.num_workers + 2
      self._pool = WorkerPool(dataset, self._transform, self.batch_size, self.num_workers, slots, self.seed,
                              start_method, stall_seconds)

  # -- consumer side ---------------------------------------------------------------------------------------------

  def _mix_task(self, batch_id, epoch):
    """The batch.MixTask of global batch `batch_id`, or None when it is not mixed."""
    if self.mix is None:
      return None
    decision = mixing.decide(self.mix, self.seed, epoch, batch_id, self.image_size)
    if decision.kind is None:
      return None
    _, partners = self.plan.mix_partners(batch_id)
    return batch_lib.MixTask(decision, partners, self._partner_rows)

  def _finish(self, batch_id, filled, skips, images, mix_task):
    """(images, labels, mask[, mix_labels, mix_weight]) of one batch from a worker's report; warns about and counts
    bad files."""
    final, partner_final = filled
    labels = np.zeros([self.batch_size], np.int32)
    mask = np.zeros([self.batch_size], np.float32)
    final = np.asarray(final, dtype=np.int64)
    kept = final >= 0
    labels[:len(final)][kept] = self.dataset.labels[final[kept]]
    mask[:len(final)][kept] = 1.0
    for where, reason in skips:
      if where not in self.bad_files:
        self.bad_files[where] = reason
        _log.warning("input: skipped %s: %s", quote(where), reason)
    self.skipped = len(self.bad_files)
    self._pass_examples += int(kept.sum())
    if (batch_id + 1) % self.steps_per_epoch == 0:
      when = ("epoch %d" % (batch_id // self.steps_per_epoch) if self.training else "eval pass %d" % self._passes)
      if self.skipped:  # nothing to say about a clean epoch
        _log.warning("input: %d bad files skipped so far (%s of %s %s)", self.skipped, when, self.dataset.name,
                     self.dataset.split)
      if not self.training and self.num_examples and not self._pass_examples:
        _log.warning("input: %s of %s %s had no usable example: all %d were skipped", when, self.dataset.name,
                     self.dataset.split, self.num_examples)
    if self.mix is None:
      return images, labels, mask
    if mix_task is None:
      return images, labels, mask, labels.copy(), np.ones([self.batch_size], np.float32)
    mix_labels = self.dataset.labels[np.asarray(partner_final, dtype=np.int64)].astype(np.int32)
    return images, labels, mask, mix_labels, np.full([self.batch_size], mix_task.decision.lam, np.float32)

  def _local_batches(self, first, stop):
    h, w = self.image_size
    k = first
    while stop is None or k < stop:
      epoch, indices = self.plan.batch(k)
      images = np.empty([self.batch_size, h, w, 3], np.uint8)
      mix_task = self._mix_task(k, epoch)
      try:
        final, skips, partner_final = batch_lib.fill_batch(self.dataset, self._transform, images, epoch, indices,
                                                           self.seed, mix=mix_task)
      except Exception as e:
        self._error = e
        raise
      yield self._finish(k, (final, partner_final), skips, images, mix_task)
      k += 1

  def _pool_batches(self, first, stop):
    pool = self._pool
    gen = pool.new_generation()
    if self._started is None:
      self._started = time.monotonic()
    if self._slots is None:
      self._slots = {"free": list(range(pool.num_slots)), "ready": {}}
    slots = self._slots
    # Results an abandoned iterator received but never handed out are stale: their slots are free again.
    # Slots still being filled for it come back as stale results below.
    for slot, _, _ in slots["ready"].values():
      slots["free"].append(slot)
    slots["ready"] = {}
    free, ready = slots["free"], slots["ready"]
    next_submit = next_yield = first
    while stop is None or next_yield < stop:
      if pool.generation != gen:
        raise RuntimeError("this batch iterator was superseded by a newer one over the same pipeline")
      while free and (stop is None or next_submit < stop):
        slot = free.pop()
        epoch, indices = self.plan.batch(next_submit)
        pool.submit(gen, next_submit, slot, epoch, indices, self._mix_task(next_submit, epoch))
        next_submit += 1
      waited_from = time.monotonic() if next_yield not in ready else None
      while next_yield not in ready:
        kind, rgen, batch_id, slot, final, skips = pool.get_result()
        if rgen != gen or kind == "stale":
          free.append(slot)
          continue
        ready[batch_id] = (slot, final, skips)
      if waited_from is not None:
        self.wait_seconds += time.monotonic() - waited_from
      slot, final, skips = ready.pop(next_yield)
      # A copy, because tf.data may keep the yielded array alive while the slot is refilled.
      images = pool.ring[slot].copy()
      free.append(slot)
      mix_task = self._mix_task(next_yield, self.plan.batch(next_yield)[0]) if self.mix is not None else None
      result = self._finish(next_yield, final, skips, images, mix_task)
      next_yield += 1
      yield result

  def wait_fraction(self):
    """wait_seconds over the time since the first batch was asked for: the fraction of the run the input was
    behind (in steady state, the step's share of time waiting for data); None without workers or requests."""
    if self.wait_seconds is None or self._started is None:
      return None
    return self.wait_seconds / max(time.monotonic() - self._started, 1e-9)

  def batches(self, first=None):
    """Python generator of (images uint8 [B,H,W,3], labels int32 [B], mask float32 [B]).

    With a MixSpec (training): (images, labels, mask, mix_labels int32 [B], mix_weight float32 [B]); row i's soft
    target is mix_weight[i] * onehot(labels[i]) + (1 - mix_weight[i]) * onehot(mix_labels[i]) (unmixed batches
    and epochs >= off_epoch: mix_labels = labels, mix_weight = 1).

    Train: endless, from global batch `first` (default start_batch). Eval: one pass over this rank's shard.
    One iterator at a time: starting a new one abandons the previous one (which raises if resumed).
    """
    first = self.start_batch if first is None else int(first)
    stop = None if self.training else self.steps_per_epoch
    if not self.training:
      self._passes += 1
      self._pass_examples = 0
    if self._pool is None:
      return self._local_batches(first, stop)
    return self._pool_batches(first, stop)

  def tf_dataset(self, prefetch=2):
    """tf.data.Dataset of (images uint8 [B,H,W,3], labels int32 [B], mask float32 [B]), fully static shapes;
    with a MixSpec (training) also mix_labels int32 [B] and mix_weight float32 [B] (see batches()).

    Every new iterator over it restarts at start_batch (train) or at the first batch (eval).
    """
    import tensorflow.compat.v1 as tf  # pylint: disable=g-import-not-at-top
    h, w = self.image_size
    b = self.batch_size
    types = (tf.uint8, tf.int32, tf.float32)
    shapes = (tf.TensorShape([b, h, w, 3]), tf.TensorShape([b]), tf.TensorShape([b]))
    if self.mix is not None:
      types += (tf.int32, tf.float32)
      shapes += (tf.TensorShape([b]), tf.TensorShape([b]))
    if "output_signature" in inspect.signature(tf.data.Dataset.from_generator).parameters:
      # TF 2.x: the same thing without the deprecation warning that output_types/shapes print.
      signature = tuple(tf.TensorSpec(s, t) for s, t in zip(shapes, types))
      dataset = tf.data.Dataset.from_generator(lambda: self.batches(), output_signature=signature)
    else:
      dataset = tf.data.Dataset.from_generator(lambda: self.batches(), types, shapes)
    return dataset.prefetch(prefetch).with_options(_without_autotune(tf))

  @property
  def error(self):
    """The exception that stopped this pipeline (workers.WorkerDiedError or WorkerStalledError,
    dataset_base.UnreadableDatasetError, or a RuntimeError from a worker), or None. tf.data wraps an exception
    raised inside the generator into a TF error with a long traceback; a trainer that catches that error can print
    this one instead."""
    if self._error is None and self._pool is not None:
      return self._pool.error
    return self._error

  @property
  def worker_pids(self):
    return self._pool.pids if self._pool is not None else []

  def close(self):
    """Stops the workers; idempotent, and also run at interpreter exit."""
    if self._pool is not None:
      self._pool.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def _without_autotune(tf):
  """tf.data options that turn autotuning off. The pipeline has no knob it could tune (a generator and a fixed
  prefetch), and its model thread costs the eval passes: every re-initialised iterator first waits for the old
  iterator's model thread to wake from a sleep that grows with its age (TF 2.21: 4 to 18 s per evaluation after
  a few epochs, against 0.01 s without it)."""
  options = tf.data.Options()
  if hasattr(options, "autotune"):
    options.autotune.enabled = False  # TF 2.x
  else:
    options.experimental_optimization.autotune = False  # TF 1.15
  return options
