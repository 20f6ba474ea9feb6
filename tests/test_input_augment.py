"""Augmentation invariants: crop geometry, output shape/dtype, flip, eval resize/centre crop, reduced JPEG decode."""
import math

import cv2
import numpy as np

from input import augment, image_codec, sampling
from input.dataset_base import ArrayDataset, FileDataset
from tests.input_helpers import write_image


def test_random_crop_stays_inside_with_area_and_aspect_in_range():
  rng = np.random.default_rng(0)
  areas, aspects = [], []
  for _ in range(2000):
    y, x, h, w = augment.random_resized_crop(375, 500, rng)
    assert 0 <= y and y + h <= 375 and 0 <= x and x + w <= 500
    areas.append(h * w / (375.0 * 500))
    aspects.append(float(w) / h)
  assert 0.049 <= min(areas) and max(areas) <= 1.0
  assert min(areas) < 0.1 and max(areas) > 0.8  # the whole range is used
  assert 0.74 <= min(aspects) and max(aspects) <= 1.35
  square = [augment.random_resized_crop(400, 400, rng) for _ in range(2000)]
  log_aspect = np.log([float(w) / h for _, _, h, w in square])
  assert abs(np.mean(log_aspect)) < 0.02  # log-uniform: on a square image, symmetric around aspect 1


def test_fallback_is_central_crop_with_clamped_aspect():
  rng = np.random.default_rng(0)
  assert augment.random_resized_crop(100, 1000, rng, attempts=0) == (0, 433, 100, 133)
  assert augment.central_crop(50, 60) == (0, 0, 50, 60)  # aspect 1.2 is inside 3/4..4/3


def _gradient(h=40, w=60):
  ramp = np.tile(np.linspace(0, 255, w).astype(np.uint8), (h, 1))
  return np.stack([ramp, np.zeros_like(ramp), 255 - ramp], axis=-1)


def test_train_output_shape_dtype_and_both_flips_occur():
  ds = ArrayDataset("t", "train", ["a"], _gradient()[None], [0])
  transform = augment.Transform((16, 24), training=True)
  flips = set()
  for seed in range(40):
    out = np.zeros((16, 24, 3), np.uint8)
    transform.apply(ds, 0, sampling.augment_rng(seed, 0, 0), out)
    left, right = int(out[:, 0, 0].mean()), int(out[:, -1, 0].mean())
    flips.add(left > right)
    assert out[:, :, 1].max() == 0  # green stays zero: no channel mix-up
  assert flips == {True, False}


def test_eval_resize_and_center_crop():
  image = np.zeros((80, 80, 3), np.uint8)
  image[4:76, 4:76] = 200  # a 4 px black border
  ds = ArrayDataset("t", "val", ["a"], image[None], [0])
  out = np.zeros((32, 32, 3), np.uint8)
  augment.Transform((32, 32), training=False).apply(ds, 0, None, out)
  assert np.array_equal(out, cv2.resize(image, (32, 32), interpolation=cv2.INTER_AREA))
  augment.Transform((32, 32), training=False, center_crop=True).apply(ds, 0, None, out)
  assert out.min() == 200  # central 87.5 % = 70 px: the border is cut away


def test_reduced_jpeg_decode_matches_full_decode(tmp_path):
  coarse = np.random.RandomState(0).randint(0, 256, (8, 8, 3)).astype(np.uint8)
  image = cv2.resize(coarse, (640, 480), interpolation=cv2.INTER_CUBIC)
  path = write_image(str(tmp_path / "c" / "big.jpg"), image)
  data = image_codec.read_bytes(path)
  assert image_codec.jpeg_size(data) == (480, 640)
  assert image_codec.decode_bgr(data, path, 4).shape == (120, 160, 3)
  ds = FileDataset("f", "val", ["c"], [path], [0])
  out = np.zeros((60, 80, 3), np.uint8)
  augment.Transform((60, 80), training=False).apply(ds, 0, None, out)  # 8x smaller: decoded at 1/8
  reference = cv2.resize(image, (80, 60), interpolation=cv2.INTER_AREA)
  assert np.abs(out.astype(int) - reference).mean() < 4.0


def test_png_and_gray_images_become_rgb(tmp_path):
  gray = np.full((10, 12), 77, np.uint8)
  path = str(tmp_path / "g.png")
  cv2.imwrite(path, gray)
  ds = FileDataset("f", "train", ["c"], [path], [0])
  assert ds.read(0).shape == (10, 12, 3) and int(ds.read(0).min()) == 77
  assert math.isclose(float(ds.read(0).mean()), 77.0)


def test_training_without_augmentation_is_the_eval_resize():
  image = _gradient()
  ds = ArrayDataset("t", "train", ["a"], image[None], [0])
  expected = np.zeros((16, 24, 3), np.uint8)
  augment.Transform((16, 24), training=False).apply(ds, 0, None, expected)
  plain = augment.Transform((16, 24), training=True, augment="none")
  for seed in range(10):
    out = np.zeros((16, 24, 3), np.uint8)
    plain.apply(ds, 0, sampling.augment_rng(seed, 0, 0), out)
    assert np.array_equal(out, expected)  # no crop, no flip, whatever the seed


def test_unknown_augmentation_is_refused():
  try:
    augment.Transform((16, 16), training=True, augment="mixup")
  except ValueError as e:
    assert "mixup" in str(e) and "inception" in str(e)
  else:
    raise AssertionError("an unknown augmentation was accepted")


def test_pad_crop_is_a_shifted_copy_and_flip_mirrors():
  image = np.zeros((16, 16, 3), np.uint8)
  image[5, 7] = (255, 10, 20)  # a marked pixel
  ds = ArrayDataset("t", "train", ["a"], image[None], [0])
  transform = augment.Transform((16, 16), training=True, augment="crop", padding=3, hflip=False)
  shifts = set()
  for seed in range(60):
    out = np.zeros((16, 16, 3), np.uint8)
    transform.apply(ds, 0, sampling.augment_rng(seed, 0, 0), out)
    ys, xs = np.nonzero(out[:, :, 0])
    assert len(ys) <= 1  # the marked pixel moved (or left the frame); nothing else appeared
    if len(ys):
      assert tuple(out[ys[0], xs[0]]) == (255, 10, 20)
      dy, dx = ys[0] - 5, xs[0] - 7
      assert -3 <= dy <= 3 and -3 <= dx <= 3
      shifts.add((dy, dx))
  assert len(shifts) > 10
  mirrored = augment.Transform((16, 16), training=True, augment="crop", padding=0, hflip=True)
  seen = set()
  for seed in range(20):
    out = np.zeros((16, 16, 3), np.uint8)
    mirrored.apply(ds, 0, sampling.augment_rng(seed, 0, 0), out)
    seen.add(int(np.nonzero(out[:, :, 0])[1][0]))
  assert seen == {7, 16 - 1 - 7}


def test_random_erasing_stays_within_its_area_bound_and_leaves_the_rest():
  rng = np.random.default_rng(0)
  erased = 0
  for _ in range(300):
    image = np.full((20, 30, 3), 7, np.uint8)
    box = augment.random_erasing(image, rng, prob=0.5)
    changed = np.any(image != 7, axis=-1)
    if box is None:
      assert not changed.any()
      continue
    erased += 1
    y, x, h, w = box
    assert h * w <= 20 * 30 / 3.0 + 20  # area fraction at most 1/3 (plus rounding)
    outside = changed.copy()
    outside[y:y + h, x:x + w] = False
    assert not outside.any()
    assert changed[y:y + h, x:x + w].mean() > 0.9  # per-pixel noise, not a constant
  assert 100 < erased < 200  # probability 0.5


def test_augment_spec_presets_and_field_errors():
  assert augment.AugmentSpec.preset("inception") == augment.AugmentSpec("inception", 4, True)
  assert augment.AugmentSpec.preset("crop", padding=2).crop == "pad"
  assert augment.AugmentSpec.preset("none") == augment.AugmentSpec("resize", 4, False)
  assert augment.Transform((8, 8), True, augment="none").spec.hflip is False
  spec = augment.AugmentSpec("crop", 3, False, "rand-m9", 0.4, 0.25)
  assert augment.Transform((8, 8), True, augment=spec).spec is spec and spec.crop == "pad"
  for kwargs, why in ((dict(crop="mixup"), "crop 'mixup': expected inception"), (dict(padding=-1), "padding=-1"),
                      (dict(randaugment="rand-m9-x"), "unknown part 'x'"), (dict(color_jitter=-0.1), "color_jitter"),
                      (dict(erase_prob=1.5), "erase_prob=1.5")):
    try:
      augment.AugmentSpec(**kwargs)
    except ValueError as e:
      assert why in str(e) and "\n" not in str(e)
    else:
      raise AssertionError("accepted %s" % kwargs)
  try:
    augment.Transform((8, 8), True, augment=spec, erase_prob=0.5)
  except ValueError as e:
    assert "not both" in str(e)
  else:
    raise AssertionError("a spec with extra options was accepted")


def test_pad_spec_output_is_a_shifted_copy_with_zero_fill():
  image = np.random.RandomState(3).randint(1, 256, (12, 12, 3)).astype(np.uint8)  # no zero pixel
  ds = ArrayDataset("t", "train", ["a"], image[None], [0])
  transform = augment.Transform((12, 12), True, augment=augment.AugmentSpec("pad", 3, False))
  for seed in range(30):
    out = np.zeros((12, 12, 3), np.uint8)
    transform.apply(ds, 0, sampling.augment_rng(seed, 0, 0), out)
    found = [(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4) if np.array_equal(out, _shift_zero(image, dy, dx))]
    assert len(found) == 1


def _shift_zero(image, dy, dx):
  padded = np.pad(image, ((3, 3), (3, 3), (0, 0)))
  return padded[3 - dy:3 - dy + image.shape[0], 3 - dx:3 - dx + image.shape[1]]


def test_hflip_mirrors_exactly():
  image = np.random.RandomState(4).randint(0, 256, (6, 9, 3)).astype(np.uint8)
  ds = ArrayDataset("t", "train", ["a"], image[None], [0])
  transform = augment.Transform((6, 9), True, augment=augment.AugmentSpec("resize", hflip=True))
  outs = set()
  for seed in range(20):
    out = np.zeros((6, 9, 3), np.uint8)
    transform.apply(ds, 0, sampling.augment_rng(seed, 0, 0), out)
    assert np.array_equal(out, image) or np.array_equal(out, image[:, ::-1])
    outs.add(np.array_equal(out, image))
  assert outs == {True, False}


def test_color_jitter_factors_stay_in_range_and_zero_strength_is_identity():
  image = np.random.RandomState(5).randint(0, 256, (10, 10, 3)).astype(np.uint8)
  rng = np.random.default_rng(0)
  assert np.array_equal(augment.color_jitter(image, 0.0, rng), image)
  flat = np.full((4, 4, 3), 100, np.uint8)  # grey: contrast and saturation leave it, brightness scales it
  values = {int(augment.color_jitter(flat, 0.4, rng)[0, 0, 0]) for _ in range(200)}
  assert min(values) >= 60 and max(values) <= 140 and len(values) > 30


def test_every_option_keeps_shape_dtype_and_is_a_pure_function_of_the_rng():
  image = _gradient(28, 28)
  ds = ArrayDataset("t", "train", ["a"], image[None], [0])
  spec = augment.AugmentSpec("pad", 4, True, "rand-m9-mstd0.5-inc1", 0.4, 0.5)
  transform = augment.Transform((28, 28), True, augment=spec)
  for seed in range(10):
    a, b = np.zeros((28, 28, 3), np.uint8), np.ones((28, 28, 3), np.uint8)
    transform.apply(ds, 0, sampling.augment_rng(seed, 1, 0), a)
    transform.apply(ds, 0, sampling.augment_rng(seed, 1, 0), b)
    assert np.array_equal(a, b)
  eval_out = np.zeros((28, 28, 3), np.uint8)
  augment.Transform((28, 28), False, augment=spec).apply(ds, 0, None, eval_out)
  assert np.array_equal(eval_out, image)  # eval ignores the training spec
