"""The embedded offline default: scikit-learn's bundled 8x8 handwritten digits as tiny RGB images.

load_digits() ships inside the scikit-learn wheel (1,797 images, 10 classes), so a fresh checkout trains and tests
without any download. Pixels 0..16 are scaled to 0..255 (round(v * 255 / 16)) and gray is repeated to RGB.
Split (fixed, stratified): within each class, indices are permuted with numpy RandomState(0) and the first
round(20 %) go to "test" (any split other than "train"), the rest to "train": 1,438 train / 359 test.
"""
import numpy as np

from input.dataset_base import ArrayDataset

TEST_FRACTION = 0.2
SPLIT_SEED = 0


def split_indices(labels, split):
  """Sorted example indices of `split` under the fixed stratified split."""
  rng = np.random.RandomState(SPLIT_SEED)
  chosen = []
  for c in range(int(labels.max()) + 1):
    members = rng.permutation(np.flatnonzero(labels == c))
    n_test = int(round(TEST_FRACTION * len(members)))
    chosen.append(members[:n_test] if split != "train" else members[n_test:])
  return np.sort(np.concatenate(chosen))


def load_digits(split="train"):
  from sklearn.datasets import load_digits as sk_load_digits  # imported late: sklearn is slow to import
  bunch = sk_load_digits()
  labels = bunch.target.astype(np.int32)
  gray = np.round(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
  keep = split_indices(labels, split)
  rgb = np.repeat(gray[keep][..., None], 3, axis=-1)
  return ArrayDataset("digits", split, [str(d) for d in range(10)], rgb, labels[keep])
