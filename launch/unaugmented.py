"""A training stream without augmentation, for small datasets where random crops and flips destroy the content.

The input package's training pipeline always applies the official inception crop (5-100 % of the area) and a
horizontal flip. On the 8x8 digits that leaves a few pixels of a digit, or a mirrored digit, and a tiny ViT stalls
near 77 % test accuracy; without augmentation it reaches 97-98 %. So `--augment=none` (the digits default) builds the
batches here: one evaluation pass of the input pipeline (its deterministic resize, so train and test images are
prepared identically) is held in memory, and every epoch is a fresh permutation from (seed, epoch).

Same interface as the part of InputPipeline the trainer uses: steps_per_epoch, num_examples, tf_dataset() of
(images uint8 [B,H,W,3], labels int32 [B], mask float32 [B]) with static shapes, start_batch resumes exactly at a
global batch, close(). Meant for splits that fit in memory (it refuses more than MAX_BYTES of pixels).
"""
import numpy as np
import tensorflow.compat.v1 as tf

from input.pipeline import InputPipeline

MAX_BYTES = 2 * 1024 ** 3


class UnaugmentedStream(object):
  """Endless, per-epoch reshuffled batches of a split held in memory (this rank's shard).

  Attributes:
    steps_per_epoch: floor(shard / batch_size) (the last partial batch of an epoch is dropped, as in training).
    num_examples: examples in this rank's shard.
    images, labels: the shard in memory.
  """

  def __init__(self, dataset, image_size, batch_size, workers=None, seed=0, rank=0, num_ranks=1, start_batch=0):
    h = w = int(image_size)
    if len(dataset) * h * w * 3 > MAX_BYTES:
      raise ValueError("--augment=none holds the training split in memory, but %s has %d images of %dx%d (over %d "
                       "GB); use --augment=inception" % (dataset.name, len(dataset), h, w, MAX_BYTES // 1024 ** 3))
    self.batch_size = int(batch_size)
    self.seed = int(seed)
    self.start_batch = int(start_batch)
    images, labels = [], []
    with InputPipeline(dataset, image_size, self.batch_size, False, workers=workers, seed=seed, rank=rank,
                       num_ranks=num_ranks) as one_pass:
      for batch_images, batch_labels, mask in one_pass.batches():
        keep = mask > 0
        images.append(batch_images[keep])
        labels.append(batch_labels[keep])
    self.images = np.concatenate(images)
    self.labels = np.concatenate(labels).astype(np.int32)
    self.num_examples = len(self.labels)
    self.steps_per_epoch = self.num_examples // self.batch_size
    if self.steps_per_epoch == 0:
      raise ValueError("batch size %d is larger than the %d training examples" % (self.batch_size,
                                                                                 self.num_examples))

  def batch(self, k):
    """Global batch k: rows (k mod steps) of the permutation of epoch k // steps."""
    epoch, position = divmod(int(k), self.steps_per_epoch)
    order = np.random.RandomState([self.seed, epoch, 7]).permutation(self.num_examples)
    rows = order[position * self.batch_size:(position + 1) * self.batch_size]
    return self.images[rows], self.labels[rows], np.ones([self.batch_size], np.float32)

  def batches(self, first=None):
    k = self.start_batch if first is None else int(first)
    while True:
      yield self.batch(k)
      k += 1

  def tf_dataset(self, prefetch=2):
    b, h, w = self.batch_size, self.images.shape[1], self.images.shape[2]
    dataset = tf.data.Dataset.from_generator(
        lambda: self.batches(), (tf.uint8, tf.int32, tf.float32),
        (tf.TensorShape([b, h, w, 3]), tf.TensorShape([b]), tf.TensorShape([b])))
    return dataset.prefetch(prefetch)

  def close(self):
    pass
