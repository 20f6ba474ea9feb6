"""Per-example augmentation with OpenCV: where to crop, how to decode, how to resize, writing into a given array.

Train: inception-style random resized crop as in the official ViT fine-tuning (decode_and_random_crop): crop area
5-100 % of the image, aspect ratio 3/4..4/3 drawn log-uniformly, up to 10 attempts, then a central crop whose aspect
is clamped to that range; resize to the output size; horizontal flip with probability 1/2.
Train with augment="crop": the eval resize, then zero padding of `padding` pixels on each side and a random crop of
the output size (the CIFAR standard), mirrored with probability 1/2.
Train with augment="none": the eval resize, for data whose meaning a crop or a mirror destroys (8x8 digits).
hflip overrides the mirroring (default: on for inception and crop, off for none).
Eval: resize the whole image to the output size, or (center_crop=True) resize so the output is the central
CENTER_CROP_FRACTION of the resized image (the usual 224-of-256 crop) and cut that centre.
Files are checked from their header first (image_codec.check_header: format, pixel budget, truncation). The crop is
planned on the JPEG's header size before decoding, so a crop at least 2x (4x, 8x) larger than the output
on both axes is decoded by libjpeg at 1/2 (1/4, 1/8) scale, which is much cheaper than decoding every pixel.
"""
import math

import cv2
import numpy as np

from input import image_codec
from input.errors import DataError

AREA_RANGE = (0.05, 1.0)
ASPECT_RANGE = (3.0 / 4.0, 4.0 / 3.0)
MAX_ATTEMPTS = 10
CENTER_CROP_FRACTION = 0.875
AUGMENTATIONS = ("inception", "crop", "none")


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


ERASE_AREA = (0.02, 1.0 / 3.0)
ERASE_LOG_ASPECT = (math.log(0.3), math.log(1.0 / 0.3))


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


class Transform(object):
  """Decode + crop + resize (+ flip) of one example into a uint8 RGB [out_h, out_w, 3] array.

    Attributes:
      out_size: (height, width) of the output.
      training: random crop and flip when True (and augment is "inception"), deterministic resize otherwise.
      center_crop: resize-then-center-crop instead of a plain resize, wherever the resize applies.
      augment: "inception" (random resized crop + flip in training) or "none" (training resizes like eval).
      max_pixels: images whose header declares more pixels are refused before decoding (None: no budget).
    """

  def __init__(self, out_size, training, center_crop=False, augment="inception",
               max_pixels=image_codec.DEFAULT_MAX_PIXELS, padding=4, hflip=None, erase_prob=0.0):
    if augment not in AUGMENTATIONS:
      raise DataError("augment must be one of %s, got %r" % (", ".join(AUGMENTATIONS), augment))
    self.out_size = tuple(int(s) for s in out_size)
    self.training = bool(training)
    self.center_crop = bool(center_crop)
    self.augment = augment
    self.max_pixels = max_pixels
    self.padding = int(padding)
    self.hflip = (augment != "none") if hflip is None else bool(hflip)
    self.erase_prob = float(erase_prob)

  def _region(self, height, width, rng):
    """(y, x, h, w, flip) to cut from a height x width source image."""
    out_h, out_w = self.out_size
    if self.training and self.augment == "inception":
      y, x, h, w = random_resized_crop(height, width, rng)
      return y, x, h, w, bool(rng.random() < 0.5) if self.hflip else False
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
    if self.training and self.augment != "inception":
      resized, flip = self._pad_crop_flip(resized, rng)
    # One strided copy does the flip, the BGR->RGB swap and the write into shared memory together.
    out[...] = resized[:, ::-1 if flip else 1, ::-1 if bgr else 1]
    if self.training and self.erase_prob:
      random_erasing(out, rng, self.erase_prob)

  def _pad_crop_flip(self, image, rng):
    """(the crop of the zero-padded image at a random offset, whether to mirror it) for augment crop / none."""
    p = self.padding if self.augment == "crop" else 0
    if p:
      dy, dx = int(rng.integers(0, 2 * p + 1)), int(rng.integers(0, 2 * p + 1))
      padded = cv2.copyMakeBorder(image, p, p, p, p, cv2.BORDER_CONSTANT, value=0)
      image = padded[dy:dy + image.shape[0], dx:dx + image.shape[1]]
    return image, bool(rng.random() < 0.5) if self.hflip else False
