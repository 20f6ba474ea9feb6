"""RandAugment (Cubuk et al.) in timm's spec language, with OpenCV / numpy on uint8 RGB H x W x 3 images.

Spec: `rand-m<magnitude>[-n<ops>][-mstd<std>][-mmax<max>][-inc<0|1>][-p<prob>]`, e.g. `rand-m9-mstd0.5-inc1`:
  m: magnitude on timm's 0..10 scale (default 10); n: ops applied per image, drawn with replacement (default 2);
  mstd: std of Gaussian noise added to the magnitude per op application (> 100: uniform in 0..m instead);
  mmax: upper clip of the (noisy) magnitude (default 10); inc1: the "increasing" op set, where a higher magnitude is
  a stronger change for every op (Posterize keeps fewer bits, Solarize inverts more, the enhance ops move further from
  1 in a random direction); p: probability that each drawn op is applied (default 0.5, as timm).
The op set and the magnitude -> argument maps follow timm's `_RAND_TRANSFORMS` / `_RAND_INCREASING_TRANSFORMS`:
AutoContrast, Equalize, Invert, Rotate (+-30 degrees), Posterize, Solarize, SolarizeAdd (+0..110 below 128),
Color, Contrast, Brightness, Sharpness (enhance factor 0.1..1.9), ShearX/Y (+-0.3), TranslateX/YRel (+-45 % of the
side). Geometric ops fill with 128 (timm's default fill) and sample bilinearly; the point ops follow PIL's ImageOps
and ImageEnhance definitions. Differences from timm: `inc0` means off (timm's bool("0") turns it on), the
magnitude may be fractional, and an unknown part of the spec is an error instead of being ignored.
Every random choice comes from the numpy Generator given to `apply`, so the result is a pure function of it.
"""
import collections
import math
import re

import cv2
import numpy as np

from input.errors import InputError

MAX_MAGNITUDE = 10.0
FILL = (128, 128, 128)
TRANSLATE_FRACTION = 0.45
SPEC_FORMAT = "rand-m<magnitude 0..10>[-n<ops>][-mstd<std>][-mmax<max>][-inc<0|1>][-p<prob>], e.g. rand-m9-mstd0.5-inc1"

RandAugmentSpec = collections.namedtuple(
    "RandAugmentSpec", ["magnitude", "num_ops", "magnitude_std", "magnitude_max", "increasing", "prob"])
RandAugmentSpec.__doc__ = """A parsed RandAugment spec.

Attributes:
  magnitude: 0..magnitude_max on timm's scale of 10; num_ops: ops per image; magnitude_std: noise std (inf: uniform
  in 0..magnitude); magnitude_max: clip of the noisy magnitude; increasing: the increasing op set; prob: per op.
"""


def parse_randaugment(spec):
  """The RandAugmentSpec of a timm spec string.

  Raises InputError (a ValueError: one line: what is wrong, what is accepted) otherwise.
  """

  def refuse(why):
    raise InputError("randaugment spec %r: %s; expected %s" % (spec, why, SPEC_FORMAT))

  parts = str(spec).strip().split("-")
  if parts[0] != "rand":
    refuse("it must start with 'rand'")
  values = {"m": MAX_MAGNITUDE, "n": 2, "mstd": 0.0, "mmax": MAX_MAGNITUDE, "inc": False, "p": 0.5}
  seen = set()
  for part in parts[1:]:
    match = re.match(r"^(mstd|mmax|inc|m|n|p)(\d+(?:\.\d*)?|\.\d+)$", part)
    if not match:
      refuse("unknown part %r" % part)
    key, text = match.groups()
    if key in seen:
      refuse("%r is given twice" % key)
    seen.add(key)
    value = float(text)
    if key == "n":
      if value != int(value) or value < 1:
        refuse("n%s: the op count must be an integer >= 1" % text)
      value = int(value)
    elif key == "inc":
      if value not in (0, 1):
        refuse("inc%s: inc is 0 or 1" % text)
      value = bool(value)
    elif key == "p" and value > 1:
      refuse("p%s: the probability must be in [0, 1]" % text)
    elif key == "mstd" and value > 100:
      value = float("inf")  # timm's convention: uniform sampling in 0..m
    values[key] = value
  if values["mmax"] <= 0:
    refuse("mmax must be > 0")
  if values["m"] > values["mmax"]:
    refuse("magnitude %g is above its maximum %g (set mmax to go beyond 10)" % (values["m"], values["mmax"]))
  return RandAugmentSpec(values["m"], values["n"], values["mstd"], values["mmax"], values["inc"], values["p"])


# -- the ops: uint8 RGB H x W x 3 in, uint8 RGB out ----------------------------------------------------------------


def _lut(image, table):
  return cv2.LUT(image, np.asarray(table, np.uint8))


def _gray(image):
  """PIL's L conversion (ITU-R 601-2 luma), rounded, as uint8 H x W."""
  return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def blend(image, degenerate, factor):
  """PIL's ImageEnhance rule: degenerate + factor * (image - degenerate), saturated to 0..255 (rounded)."""
  if factor == 1.0:
    return image
  return cv2.addWeighted(image, float(factor), degenerate, 1.0 - float(factor), 0.0)


def auto_contrast(image):
  """Each channel stretched so that its darkest pixel is 0 and its brightest 255 (a flat channel is left)."""
  lo = image.reshape(-1, 3).min(axis=0).astype(np.float64)
  hi = image.reshape(-1, 3).max(axis=0).astype(np.float64)
  levels = np.arange(256, dtype=np.float64)[:, None]  # float64 and PIL's formula: the same truncations
  scale = np.where(hi > lo, 255.0 / np.maximum(hi - lo, 1), 1.0)
  offset = np.where(hi > lo, -lo * scale, 0.0)
  tables = np.clip(np.floor(levels * scale + offset), 0, 255).astype(np.uint8)  # [256, 3]
  return np.stack([cv2.LUT(image[..., c], tables[:, c]) for c in range(3)], axis=-1)


def equalize(image):
  """PIL's ImageOps.equalize per channel: the cumulative histogram spread over 0..255 in `step` sized bins."""
  channels = []
  for c in range(3):
    hist = np.bincount(image[..., c].ravel(), minlength=256)
    used = np.flatnonzero(hist)
    step = (int(hist.sum()) - int(hist[used[-1]])) // 255 if len(used) > 1 else 0
    if not step:
      channels.append(image[..., c])
      continue
    starts = np.concatenate([[0], np.cumsum(hist)[:-1]])  # pixels strictly below each level
    table = np.minimum((starts + step // 2) // step, 255)
    channels.append(cv2.LUT(image[..., c], table.astype(np.uint8)))
  return np.stack(channels, axis=-1)


def invert(image):
  return 255 - image


def posterize(image, bits):
  """Keeps the `bits` most significant bits of every value (0 bits: black; 8 or more: unchanged)."""
  bits = int(bits)
  if bits >= 8:
    return image
  return image & np.uint8((0xFF << (8 - max(bits, 0))) & 0xFF)


def solarize(image, threshold):
  """Values >= threshold are inverted (threshold 256: nothing, 0: everything)."""
  levels = np.arange(256)
  return _lut(image, np.where(levels < threshold, levels, 255 - levels))


def solarize_add(image, add, threshold=128):
  """Values below threshold get `add` added (saturating), the others are kept."""
  levels = np.arange(256)
  return _lut(image, np.where(levels < threshold, np.minimum(levels + int(add), 255), levels))


def color(image, factor):
  """Saturation: blend with the grey image (factor 0: grey, 1: unchanged)."""
  return blend(image, cv2.cvtColor(_gray(image), cv2.COLOR_GRAY2RGB), factor)


def contrast(image, factor):
  """Blend with a flat image of the mean grey level (rounded, as PIL)."""
  mean = int(_gray(image).mean() + 0.5)
  if factor == 1.0:
    return image
  return cv2.addWeighted(image, float(factor), image, 0.0, (1.0 - float(factor)) * mean)


def brightness(image, factor):
  """Blend with black: a scaling of every value."""
  if factor == 1.0:
    return image
  return cv2.addWeighted(image, float(factor), image, 0.0, 0.0)


_SMOOTH = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13.0


def sharpness(image, factor):
  """Blend with PIL's SMOOTH-filtered image (3x3, centre weight 5 of 13), whose 1-pixel border is the original."""
  if image.shape[0] < 3 or image.shape[1] < 3:
    return image
  smooth = image.copy()
  smooth[1:-1, 1:-1] = cv2.filter2D(image, -1, _SMOOTH, borderType=cv2.BORDER_REPLICATE)[1:-1, 1:-1]
  return blend(image, smooth, factor)


def _warp(image, source_of_output):
  """Output pixel (x, y) samples the input at source_of_output @ (x, y, 1) (pixel-centre coordinates)."""
  h, w = image.shape[:2]
  return cv2.warpAffine(image, np.asarray(source_of_output, np.float64), (w, h),
                        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=FILL)


def rotate(image, degrees):
  """Counter-clockwise rotation by `degrees` about the image centre (as PIL's Image.rotate), corners filled 128."""
  h, w = image.shape[:2]
  matrix = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), float(degrees), 1.0)
  return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=FILL)


def shear_x(image, factor):
  """PIL's affine (1, factor, 0, 0, 1, 0): output (x, y) reads input (x + factor * y, y), origin top-left corner."""
  return _warp(image, [[1.0, factor, 0.5 * factor], [0.0, 1.0, 0.0]])


def shear_y(image, factor):
  return _warp(image, [[1.0, 0.0, 0.0], [factor, 1.0, 0.5 * factor]])


def translate_x(image, pixels):
  """Output (x, y) reads input (x + pixels, y): the content moves left by `pixels` (right for negative)."""
  if abs(pixels - round(pixels)) < 1e-6:  # whole pixels: an exact shift, no resampling
    return _shift(image, 0, -int(round(pixels)))
  return _warp(image, [[1.0, 0.0, pixels], [0.0, 1.0, 0.0]])


def translate_y(image, pixels):
  if abs(pixels - round(pixels)) < 1e-6:
    return _shift(image, -int(round(pixels)), 0)
  return _warp(image, [[1.0, 0.0, 0.0], [0.0, 1.0, pixels]])


def _shift(image, dy, dx):
  """The image moved down by dy and right by dx, uncovered pixels FILL."""
  h, w = image.shape[:2]
  out = np.empty_like(image)
  out[...] = FILL
  if abs(dy) < h and abs(dx) < w:
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = image[max(-dy, 0):h + min(-dy, 0),
                                                                      max(-dx, 0):w + min(-dx, 0)]
  return out


# -- magnitude (0..10) -> op argument, as timm's level functions ----------------------------------------------------


def _signed(value, rng):
  return -value if rng.random() > 0.5 else value


def _enhance(m, rng):
  return (m / MAX_MAGNITUDE) * 1.8 + 0.1


def _enhance_increasing(m, rng):
  return max(0.1, 1.0 + _signed((m / MAX_MAGNITUDE) * 0.9, rng))


def _posterize_bits(m, rng):
  return int((m / MAX_MAGNITUDE) * 4)


def _solarize_threshold(m, rng):
  return int((m / MAX_MAGNITUDE) * 256)


Op = collections.namedtuple("Op", ["name", "fn", "arg"])  # arg(magnitude, rng, image) -> the op's argument, or None


def _relative(fraction_of, m, rng, image):
  return _signed((m / MAX_MAGNITUDE) * TRANSLATE_FRACTION, rng) * image.shape[fraction_of]


_COMMON = [
    Op("AutoContrast", auto_contrast, None),
    Op("Equalize", equalize, None),
    Op("Invert", invert, None),
    Op("Rotate", rotate, lambda m, rng, image: _signed((m / MAX_MAGNITUDE) * 30.0, rng)),
]
_GEOMETRIC = [
    Op("ShearX", shear_x, lambda m, rng, image: _signed((m / MAX_MAGNITUDE) * 0.3, rng)),
    Op("ShearY", shear_y, lambda m, rng, image: _signed((m / MAX_MAGNITUDE) * 0.3, rng)),
    Op("TranslateXRel", translate_x, lambda m, rng, image: _relative(1, m, rng, image)),
    Op("TranslateYRel", translate_y, lambda m, rng, image: _relative(0, m, rng, image)),
]
_SOLARIZE_ADD = Op("SolarizeAdd", solarize_add, lambda m, rng, image: int((m / MAX_MAGNITUDE) * 110))
OPS = _COMMON + [
    Op("Posterize", posterize, lambda m, rng, image: _posterize_bits(m, rng)),
    Op("Solarize", solarize, lambda m, rng, image: _solarize_threshold(m, rng)),
    _SOLARIZE_ADD,
    Op("Color", color, lambda m, rng, image: _enhance(m, rng)),
    Op("Contrast", contrast, lambda m, rng, image: _enhance(m, rng)),
    Op("Brightness", brightness, lambda m, rng, image: _enhance(m, rng)),
    Op("Sharpness", sharpness, lambda m, rng, image: _enhance(m, rng)),
] + _GEOMETRIC
INCREASING_OPS = _COMMON + [
    Op("PosterizeIncreasing", posterize, lambda m, rng, image: 4 - _posterize_bits(m, rng)),
    Op("SolarizeIncreasing", solarize, lambda m, rng, image: 256 - _solarize_threshold(m, rng)),
    _SOLARIZE_ADD,
    Op("ColorIncreasing", color, lambda m, rng, image: _enhance_increasing(m, rng)),
    Op("ContrastIncreasing", contrast, lambda m, rng, image: _enhance_increasing(m, rng)),
    Op("BrightnessIncreasing", brightness, lambda m, rng, image: _enhance_increasing(m, rng)),
    Op("SharpnessIncreasing", sharpness, lambda m, rng, image: _enhance_increasing(m, rng)),
] + _GEOMETRIC


def apply_op(op, image, magnitude, rng):
  """One op at one (already noised and clipped) magnitude."""
  if op.arg is None:
    return op.fn(image)
  return op.fn(image, op.arg(magnitude, rng, image))


class RandAugment(object):
  """RandAugment of one spec; `apply(image, rng)` returns the augmented uint8 RGB image (a new array or `image`).

  Attributes:
    spec: the RandAugmentSpec; ops: the op list it draws from.
  """

  def __init__(self, spec):
    self.spec = parse_randaugment(spec) if isinstance(spec, str) else spec
    self.ops = INCREASING_OPS if self.spec.increasing else OPS

  def __getstate__(self):  # the op table holds lambdas: pickle (spawned workers) carries the spec only
    return {"spec": self.spec}

  def __setstate__(self, state):
    self.__init__(state["spec"])

  def _magnitude(self, rng):
    s = self.spec
    m = s.magnitude
    if s.magnitude_std == float("inf"):
      m = rng.uniform(0.0, m)
    elif s.magnitude_std > 0:
      m = rng.normal(m, s.magnitude_std)
    return min(max(m, 0.0), s.magnitude_max)

  def apply(self, image, rng):
    for choice in rng.integers(0, len(self.ops), self.spec.num_ops):
      if self.spec.prob < 1.0 and rng.random() > self.spec.prob:
        continue
      image = apply_op(self.ops[int(choice)], image, self._magnitude(rng), rng)
    return image

  def __repr__(self):
    return "RandAugment(%s)" % (self.spec,)


def describe(spec):
  """The canonical spec string of a RandAugmentSpec (for logs)."""
  text = "rand-m%g-n%d" % (spec.magnitude, spec.num_ops)
  if spec.magnitude_std:
    text += "-mstd%g" % (101 if math.isinf(spec.magnitude_std) else spec.magnitude_std)
  if spec.magnitude_max != MAX_MAGNITUDE:
    text += "-mmax%g" % spec.magnitude_max
  return text + ("-inc1" if spec.increasing else "") + ("-p%g" % spec.prob if spec.prob != 0.5 else "")
