"""Per-example augmentation with OpenCV: where to crop, how to decode, how to resize, writing into a given array.

What a training example goes through is an AugmentSpec, in this order: crop/resize -> flip -> colour jitter ->
RandAugment (input/randaugment.py) -> random erasing. Every random choice comes from the numpy Generator handed to
Transform.apply (sampling.augment_rng: a pure function of (seed, epoch, example index, attempt)).
- crop "inception": random resized crop as in the official ViT fine-tuning (decode_and_random_crop): crop area
  5-100 % of the image, aspect ratio 3/4..4/3 drawn log-uniformly, up to 10 attempts, then a central crop whose
  aspect is clamped to that range; resize to the output size.
- crop "pad" (alias "crop"): the eval resize, then `padding` pixels of zeros (black) on each side and a random crop
  of the output size (the CIFAR standard, torchvision's RandomCrop(size, padding) with its default zero fill): the
  output is the image shifted by -padding..padding pixels on each axis, uncovered pixels 0.
- crop "resize" (alias "none"): the eval resize, for data whose meaning a crop destroys (8x8 digits).
- hflip: mirror with probability 1/2.
- color_jitter s: brightness, contrast and saturation factors each uniform in [max(0, 1 - s), 1 + s], applied in a
  random order (torchvision's ColorJitter(s, s, s), what timm's --color-jitter s builds).
- randaugment: a timm spec string (rand-m9-mstd0.5-inc1), "" for off.
- erase_prob: random erasing (Zhong et al.) in DeiT's per-pixel mode with timm's default area 2-33 % and aspect
  0.3..3.3; the noise is N(0, 1) in the model's input space x / 127.5 - 1, i.e. 127.5 * (1 + N(0, 1)) clipped to
  0..255.
The presets (Transform's old augment strings): "inception" = inception crop + flip, "crop" = pad + flip, "none" =
resize without flip; `hflip` overrides the mirroring.
Eval: resize the whole image to the output size, or (center_crop=True) resize so the output is the central
CENTER_CROP_FRACTION of the resized image (the usual 224-of-256 crop) and cut that centre.
Files are checked from their header first (image_codec.check_header: format, pixel budget, truncation). The crop is
planned on the JPEG's header size before decoding, so a crop at least 2x (4x, 8x) larger than the output
on both axes is decoded by libjpeg at 1/2 (1/4, 1/8) scale, which is much cheaper than decoding every pixel.
"""
import collections
import math

import cv2
import numpy as np

from input import image_codec
from input.errors import InputError
from input import randaugment as randaugment_lib
from input.randaugment import parse_randaugment  # the flag layer checks --randaugment through here

AREA_RANGE = (0.05, 1.0)
ASPECT_RANGE = (3.0 / 4.0, 4.0 / 3.0)
MAX_ATTEMPTS = 10
CENTER_CROP_FRACTION = 0.875
CROPS = ("inception", "pad", "resize")
_CROP_ALIASES = {"inception": "inception", "pad": "pad", "crop": "pad", "resize": "resize", "none": "resize"}
AUGMENTATIONS = ("inception", "crop", "none")  # the presets


def parse_crop(text):
  """The canonical crop name ("inception", "pad", "resize") of a flag value; InputError (a ValueError) otherwise."""
  name = _CROP_ALIASES.get(str(text).strip().lower())
  if name is None:
    raise InputError("crop %r: expected inception (random resized crop), pad or crop (pad and random crop), "
                     "resize or none (the eval resize)" % (text,))
  return name


def _probability(name, value):
  value = float(value)
  if not 0.0 <= value <= 1.0:
    raise InputError("%s=%s: expected a probability in [0, 1] (0: off)" % (name, value))
  return value


_SpecFields = collections.namedtuple("AugmentSpec",
                                     ["crop", "padding", "hflip", "randaugment", "color_jitter", "erase_prob"])


class AugmentSpec(_SpecFields):
  """The training augmentation of one example, checked when made (InputError, a ValueError, naming the field).

  Attributes:
    crop: "inception" | "pad" | "resize" (aliases "crop" = pad, "none" = resize are accepted).
    padding: pixels of zero padding on each side for crop "pad".
    hflip: mirror with probability 1/2.
    randaugment: timm RandAugment spec string, "" = off.
    color_jitter: brightness / contrast / saturation strength, 0 = off.
    erase_prob: probability of random erasing per image, 0 = off.
  """
  __slots__ = ()

  def __new__(cls, crop="inception", padding=4, hflip=True, randaugment="", color_jitter=0.0, erase_prob=0.0):
    crop = parse_crop(crop)
    if int(padding) != padding or padding < 0:
      raise InputError("padding=%s: expected whole pixels >= 0" % (padding,))
    randaugment = (randaugment or "").strip()
    if randaugment:
      parse_randaugment(randaugment)
    if float(color_jitter) < 0:
      raise InputError("color_jitter=%s: expected a strength >= 0 (0: off)" % (color_jitter,))
    return super(AugmentSpec, cls).__new__(cls, crop, int(padding), bool(hflip), randaugment, float(color_jitter),
                                           _probability("erase_prob", erase_prob))

  @classmethod
  def preset(cls, name, padding=4, hflip=None, randaugment="", color_jitter=0.0, erase_prob=0.0):
    """The spec of one of Transform's augment strings: inception / crop (= pad) / none (= resize, no flip)."""
    if name not in AUGMENTATIONS + CROPS:
      raise InputError("augment must be one of %s (or an AugmentSpec), got %r" % (", ".join(AUGMENTATIONS), name))
    crop = parse_crop(name)
    return cls(crop, padding, crop != "resize" if hflip is None else hflip, randaugment, color_jitter, erase_prob)


def augment_spec(augment, padding=4, hflip=None, randaugment="", color_jitter=0.0, erase_prob=0.0):
  """An AugmentSpec from an AugmentSpec (the other arguments must then be left at their defaults) or a preset."""
  if isinstance(augment, AugmentSpec):
    if (padding, hflip, randaugment, color_jitter, erase_prob) != (4, None, "", 0.0, 0.0):
      raise InputError("give the augmentation either as an AugmentSpec or as a preset name with its options, not both")
    return augment
  return AugmentSpec.preset(augment, padding, hflip, randaugment, color_jitter, erase_prob)


def random_resized_crop(height, width, rng, area_range=AREA_RANGE, aspect_range=ASPECT_RANGE, attempts=MAX_ATTEMPTS):
  """(y, x, crop_height, crop_width) of a random crop of a height x width image; rng is a numpy Generator."""
  area = float(height * width)
  log_lo, log_hi = math.log(aspect_range[0]), math.log(aspect_range[1])
  for _ in range(attempts):
    target = area * rng.uniform(area_range[0], area_range[1])
    aspect = math.exp(rng.uniform(log_lo, log_hi))
    crop_w = int(round(math.sqrt(target * aspect)))
    crop_h = int(round(math.sqrt(target / aspect)))
    if 0 < crop_w <= width and 0 < crop_h <= height:
      y = int(rng.integers(0, height - crop_h + 1))
      x = int(rng.integers(0, width - crop_w + 1))
      return y, x, crop_h, crop_w
  return central_crop(height, width, aspect_range)


def central_crop(height, width, aspect_range=ASPECT_RANGE):
  """The largest central crop whose aspect (w/h) lies in aspect_range: the random crop's fallback."""
  ratio = float(width) / height
  crop_h, crop_w = height, width
  if ratio < aspect_range[0]:
    crop_h = max(1, int(round(width / aspect_range[0])))
  elif ratio > aspect_range[1]:
    crop_w = max(1, int(round(height * aspect_range[1])))
  return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


ERASE_AREA = (0.02, 1.0 / 3.0)  # timm's RandomErasing defaults: area fraction, and aspect 0.3..1/0.3
ERASE_ASPECT = (0.3, 1.0 / 0.3)
ERASE_LOG_ASPECT = (math.log(ERASE_ASPECT[0]), math.log(ERASE_ASPECT[1]))


def random_erasing(image, rng, prob, area=ERASE_AREA, attempts=10):
  """Random erasing (Zhong et al.) in DeiT's per-pixel mode, in place on a uint8 H x W x C image: with probability
  `prob` a rectangle of area fraction in `area`, aspect log-uniform in 0.3..3.3, gets per-pixel normal noise of the
  model's input space (N(0, 1) after x / 127.5 - 1, i.e. 127.5 * (1 + N(0, 1)) clipped to 0..255). Returns the
  erased (y, x, h, w), or None."""
  if rng.random() >= prob:
    return None
  height, width = image.shape[:2]
  for _ in range(attempts):
    target = height * width * rng.uniform(area[0], area[1])
    aspect = math.exp(rng.uniform(*ERASE_LOG_ASPECT))
    h, w = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
    if 0 < h < height and 0 < w < width:
      y, x = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
      noise = 127.5 * (1.0 + rng.standard_normal((h, w) + image.shape[2:]))
      image[y:y + h, x:x + w] = np.clip(np.round(noise), 0, 255).astype(np.uint8)
      return y, x, h, w
  return None


def _reduction(crop_h, crop_w, out_h, out_w):
  for factor in (8, 4, 2):
    if crop_h >= factor * out_h and crop_w >= factor * out_w:
      return factor
  return 1


def _interpolation(crop_h, crop_w, out_h, out_w):
  # INTER_AREA averages every source pixel (no aliasing) but only pays off for strong shrinking; below 2x,
  # bilinear is close in quality and several times cheaper.
  if crop_h >= 2 * out_h and crop_w >= 2 * out_w:
    return cv2.INTER_AREA
  return cv2.INTER_LINEAR


def color_jitter(image, strength, rng):
  """Brightness, contrast and saturation factors each uniform in [max(0, 1 - s), 1 + s], in a random order."""
  ops = (randaugment_lib.brightness, randaugment_lib.contrast, randaugment_lib.color)
  order = rng.permutation(3)
  factors = rng.uniform(max(0.0, 1.0 - strength), 1.0 + strength, 3)
  for i in order:
    image = ops[i](image, factors[i])
  return image


class Transform(object):
  """Decode + crop + resize (+ flip, colour jitter, RandAugment, erasing) of one example into uint8 RGB [h, w, 3].

    Attributes:
      out_size: (height, width) of the output.
      training: the spec's random augmentation when True, the deterministic eval resize otherwise.
      center_crop: resize-then-center-crop instead of a plain resize, wherever the resize applies.
      spec: the AugmentSpec applied in training.
      max_pixels: images whose header declares more pixels are refused before decoding (None: no budget).
    """

  def __init__(self, out_size, training, center_crop=False, augment="inception",
               max_pixels=image_codec.DEFAULT_MAX_PIXELS, padding=4, hflip=None, erase_prob=0.0, randaugment="",
               color_jitter=0.0):
    """augment: an AugmentSpec, or a preset name ("inception", "crop", "none") completed by the other options."""
    self.spec = augment_spec(augment, padding, hflip, randaugment, color_jitter, erase_prob)
    self.out_size = tuple(int(s) for s in out_size)
    self.training = bool(training)
    self.center_crop = bool(center_crop)
    self.max_pixels = max_pixels
    self._randaugment = randaugment_lib.RandAugment(self.spec.randaugment) if self.spec.randaugment else None

  @property
  def augment(self):
    """The crop of the spec ("inception", "pad", "resize")."""
    return self.spec.crop

  def _region(self, height, width, rng):
    """(y, x, h, w, flip) to cut from a height x width source image."""
    out_h, out_w = self.out_size
    if self.training and self.spec.crop == "inception":
      y, x, h, w = random_resized_crop(height, width, rng)
      return y, x, h, w, bool(rng.random() < 0.5) if self.spec.hflip else False
    if not self.center_crop:
      return 0, 0, height, width, False
    scale = max(float(out_h) / height, float(out_w) / width) / CENTER_CROP_FRACTION
    h = min(height, max(1, int(round(out_h / scale))))
    w = min(width, max(1, int(round(out_w / scale))))
    return (height - h) // 2, (width - w) // 2, h, w, False

  def apply(self, dataset, index, rng, out):
    """Writes example `index` of `dataset` into `out` ([out_h, out_w, 3] uint8); raises DecodeError."""
    read_encoded = getattr(dataset, "read_encoded", None)
    if read_encoded is None:
      image, bgr = dataset.read(index), False
      y, x, h, w, flip = self._region(image.shape[0], image.shape[1], rng)
    else:
      data = read_encoded(index)
      where = dataset.describe(index)
      header = image_codec.check_header(data, where, self.max_pixels)
      if header.format != "jpeg":  # only libjpeg can decode at a reduced scale: decode fully
        image = image_codec.decode_bgr(data, where, header=header)
        y, x, h, w, flip = self._region(image.shape[0], image.shape[1], rng)
      else:
        y, x, h, w, flip = self._region(header.height, header.width, rng)
        image = image_codec.decode_bgr(data, where, _reduction(h, w, *self.out_size), header=header)
        if image.shape[:2] != (header.height, header.width):  # reduced decode: map the crop to the smaller image
          sy, sx = float(image.shape[0]) / header.height, float(image.shape[1]) / header.width
          y0, x0 = int(y * sy), int(x * sx)
          y1 = min(image.shape[0], max(y0 + 1, int(round((y + h) * sy))))
          x1 = min(image.shape[1], max(x0 + 1, int(round((x + w) * sx))))
          y, x, h, w = y0, x0, y1 - y0, x1 - x0
      bgr = True
    crop = image[y:y + h, x:x + w]
    out_h, out_w = self.out_size
    if (h, w) == (out_h, out_w):
      resized = crop
    else:
      resized = cv2.resize(crop, (out_w, out_h), interpolation=_interpolation(h, w, out_h, out_w))
    dy = dx = 0
    if self.training and self.spec.crop != "inception":
      p = self.spec.padding if self.spec.crop == "pad" else 0
      if p:
        dy, dx = int(rng.integers(0, 2 * p + 1)) - p, int(rng.integers(0, 2 * p + 1)) - p
      flip = bool(rng.random() < 0.5) if self.spec.hflip else False
    # One strided copy does the shift, the flip, the BGR->RGB swap and the write into shared memory together.
    source = resized[:, ::-1 if flip else 1, ::-1 if bgr else 1]
    if dy or dx:  # the shift was drawn for the unmirrored image (padded, cropped, then mirrored)
      _write_shifted(source, -dy, dx if flip else -dx, out)
    else:
      out[...] = source
    if not self.training:
      return
    spec = self.spec
    if spec.color_jitter or self._randaugment is not None:
      image = out
      if spec.color_jitter:
        image = color_jitter(image, spec.color_jitter, rng)
      if self._randaugment is not None:
        image = self._randaugment.apply(image, rng)
      if image is not out:
        out[...] = image
    if spec.erase_prob:
      random_erasing(out, rng, spec.erase_prob)


def _write_shifted(image, dy, dx, out):
  """out = image moved down by dy and right by dx (negative: up / left), zeros where nothing lands.

  The same pixels as padding by p and cropping at offset (p - dy, p - dx), without building the padded image.
  """
  h, w = image.shape[:2]
  out[...] = 0
  if abs(dy) < h and abs(dx) < w:
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = image[max(-dy, 0):h + min(-dy, 0),
                                                                      max(-dx, 0):w + min(-dx, 0)]
