"""Mixup and CutMix with soft targets: a batch-level step in the worker, after the batch's rows are filled.

Semantics are timm's Mixup in batch mode: for global batch k, with probability `prob` the batch is mixed; with both
alphas > 0, CutMix is chosen with probability `switch_prob`, else Mixup; lam ~ Beta(alpha, alpha) of the chosen
one. Every example is mixed with the example at the mirrored position of the GLOBAL batch (timm's x.flip(0) over
the batch that one rank of N x B would see; sampling.BatchPlan.mix_partners), so N ranks x B mix exactly as
1 rank x NB. Mixup: pixels = round(lam * own + (1 - lam) * partner). CutMix: a box of side sqrt(1 - lam) times the
image's, centred uniformly (clipped at the border), gets the partner's pixels, and lam becomes the un-pasted area
fraction (timm's correct_lam). Each row reports (partner label, w): its soft target is
w * onehot(label) + (1 - w) * onehot(partner label), w = lam; label smoothing composes with it in the loss.
The decision (whether, which, lam, the box) is drawn from sampling.mix_rng(seed, epoch, k) only: identical on every
rank and for every worker count. From epoch `off_epoch` on nothing is mixed (partner = self, w = 1).
"""
import collections
import math

import numpy as np

from input import sampling
from input.errors import InputError

_MixFields = collections.namedtuple("MixSpec", ["mixup_alpha", "cutmix_alpha", "prob", "switch_prob", "off_epoch"])


class MixSpec(_MixFields):
  """Mixup / CutMix settings, checked when made (InputError, a ValueError, naming the field and what is accepted).

  Attributes:
    mixup_alpha, cutmix_alpha: Beta(alpha, alpha) of the mixing weight; 0 = that one is off (both 0: no mixing).
    prob: probability that a batch is mixed at all; switch_prob: CutMix's share when both alphas are on.
    off_epoch: no mixing from this epoch on (None: never stops).
  """
  __slots__ = ()

  def __new__(cls, mixup_alpha=0.0, cutmix_alpha=0.0, prob=1.0, switch_prob=0.5, off_epoch=None):
    for name, alpha in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
      if not float(alpha) >= 0:
        raise InputError("%s=%s: a Beta alpha must be > 0 (or 0 for off)" % (name, alpha))
    for name, p in (("prob", prob), ("switch_prob", switch_prob)):
      if not 0.0 <= float(p) <= 1.0:
        raise InputError("%s=%s: expected a probability in [0, 1]" % (name, p))
    if off_epoch is not None and (int(off_epoch) != off_epoch or off_epoch < 0):
      raise InputError("off_epoch=%s: expected a whole epoch >= 0 (or None for never)" % (off_epoch,))
    return super(MixSpec, cls).__new__(cls, float(mixup_alpha), float(cutmix_alpha), float(prob), float(switch_prob),
                                       None if off_epoch is None else int(off_epoch))

  @property
  def active(self):
    return self.mixup_alpha > 0 or self.cutmix_alpha > 0

  def on_in(self, epoch):
    """Whether batches of `epoch` may be mixed."""
    return self.active and (self.off_epoch is None or epoch < self.off_epoch)


MixDecision = collections.namedtuple("MixDecision", ["kind", "lam", "box"])
MixDecision.__doc__ = """How one global batch is mixed.

Attributes:
  kind: None (not mixed), "mixup" or "cutmix"; lam: the weight of each row's own label (CutMix: the corrected one);
  box: CutMix's (y0, y1, x0, x1) pasted from the partner, else None.
"""
NO_MIX = MixDecision(None, 1.0, None)


def cutmix_box(height, width, lam, rng):
  """(y0, y1, x0, x1): a box of sides int(side * sqrt(1 - lam)) centred at a uniform pixel, clipped to the image."""
  ratio = math.sqrt(1.0 - lam)
  cut_h, cut_w = int(height * ratio), int(width * ratio)
  cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
  y0, y1 = min(max(cy - cut_h // 2, 0), height), min(max(cy + cut_h // 2, 0), height)
  x0, x1 = min(max(cx - cut_w // 2, 0), width), min(max(cx + cut_w // 2, 0), width)
  return y0, y1, x0, x1


def decide(spec, seed, epoch, global_batch, image_hw):
  """The MixDecision of global batch k (a pure function of (spec, seed, epoch, k, image size))."""
  if spec is None or not spec.on_in(epoch):
    return NO_MIX
  rng = sampling.mix_rng(seed, epoch, global_batch)
  if rng.random() >= spec.prob:
    return NO_MIX
  if spec.mixup_alpha > 0 and spec.cutmix_alpha > 0:
    use_cutmix = bool(rng.random() < spec.switch_prob)
  else:
    use_cutmix = spec.cutmix_alpha > 0
  alpha = spec.cutmix_alpha if use_cutmix else spec.mixup_alpha
  lam = float(rng.beta(alpha, alpha))
  if not use_cutmix:
    return NO_MIX if lam == 1.0 else MixDecision("mixup", lam, None)
  height, width = image_hw
  box = cutmix_box(height, width, lam, rng)
  pasted = (box[1] - box[0]) * (box[3] - box[2])
  return MixDecision("cutmix", 1.0 - pasted / float(height * width), box)


def mix_rows(decision, images, partners):
  """Mixes uint8 images [n, H, W, 3] in place with the partner rows `partners` (same shape, unmixed pixels)."""
  if decision.kind == "mixup":
    mixed = decision.lam * images.astype(np.float32) + (1.0 - decision.lam) * partners.astype(np.float32)
    np.clip(np.rint(mixed), 0, 255, out=mixed)
    images[...] = mixed.astype(np.uint8)
  elif decision.kind == "cutmix":
    y0, y1, x0, x1 = decision.box
    images[:, y0:y1, x0:x1] = partners[:, y0:y1, x0:x1]


def soft_targets(labels, mix_labels, mix_weight, num_classes):
  """float32 [B, num_classes]: w * onehot(label) + (1 - w) * onehot(partner label) (a reference for the trainer)."""
  eye = np.eye(num_classes, dtype=np.float32)
  w = np.asarray(mix_weight, np.float32)[:, None]
  return w * eye[np.asarray(labels)] + (1.0 - w) * eye[np.asarray(mix_labels)]
