"""RandAugment: each op on a constructed image (geometry moves a marked pixel where it must go, point ops give exact
values, the enhance ops agree with PIL's definitions), timm's magnitude maps, the spec language and its errors."""
import pickle

import numpy as np
import pytest

from input import randaugment as ra


def _marked(h, w, y, x, background=0):
  image = np.full((h, w, 3), background, np.uint8)
  image[y, x] = (250, 200, 150)
  return image


def _where(image, value=(250, 200, 150)):
  ys, xs = np.nonzero(np.all(image == value, axis=-1))
  return list(zip(ys.tolist(), xs.tolist()))


def _ramp():
  """Every value 0..255 once per channel (16 x 16)."""
  values = np.arange(256, dtype=np.uint8).reshape(16, 16)
  return np.stack([values, values[::-1], values.T], axis=-1)


def test_rotate_90_moves_a_marked_pixel_counter_clockwise():
  image = _marked(9, 9, 2, 7)  # near the top-right corner
  out = ra.rotate(image, 90.0)
  # Counter-clockwise (as PIL's rotate): (y, x) -> (n - 1 - x, y); a quarter turn resamples no pixel.
  assert np.all(np.abs(out[1, 2].astype(int) - (250, 200, 150)) <= 1)
  assert int(np.abs(out.astype(int)).sum() - out[1, 2].astype(int).sum()) <= 9  # nothing else lights up
  assert np.array_equal(ra.rotate(ra.rotate(image, 90.0), -90.0)[2, 7], image[2, 7])


def test_rotate_fills_the_uncovered_corners_with_128():
  out = ra.rotate(np.zeros((21, 21, 3), np.uint8), 45.0)
  assert tuple(out[0, 0]) == tuple(out[-1, -1]) == (128, 128, 128) and tuple(out[10, 10]) == (0, 0, 0)


def test_translate_moves_by_the_expected_pixels_and_fills_128():
  image = _marked(10, 20, 4, 12)
  left = ra.translate_x(image, 5.0)  # PIL's affine (1, 0, 5, 0, 1, 0): output x reads input x + 5
  assert _where(left) == [(4, 7)] and np.all(left[:, -5:] == 128) and np.all(left[:, :15][left[:, :15] != 250] < 201)
  assert _where(ra.translate_x(image, -3.0)) == [(4, 15)]
  assert _where(ra.translate_y(image, -2.0)) == [(6, 12)] and np.all(ra.translate_y(image, -2.0)[:2] == 128)
  rng = np.random.default_rng(0)
  op = dict((o.name, o) for o in ra.OPS)["TranslateXRel"]
  shifts = {op.arg(10.0, rng, image) for _ in range(50)}
  np.testing.assert_allclose(sorted(shifts), [-9.0, 9.0])  # 45 % of the width at full magnitude, either way
  moved = {tuple(_where(ra.apply_op(op, image, 10.0, rng))) for _ in range(50)}
  assert moved == {((4, 3),), ()}  # 9 px left, or 9 px right (out of the frame)


def test_shear_x_moves_rows_in_proportion_to_their_height():
  image = np.zeros((11, 30, 3), np.uint8)
  image[:, 10] = 255  # a vertical line
  # PIL's affine (1, 1, 0, 0, 1, 0) on pixel centres: output (x + .5, y + .5) reads input (x + y + 1, y + .5), so
  # row y shows the line (input centre 10) at x = 9.5 - y, split evenly between two pixels (the far edge reads fill).
  out = ra.shear_x(image, 1.0).astype(float)
  for y in range(10):
    assert np.dot(out[y, :20, 0], np.arange(20)) / out[y, :20, 0].sum() == pytest.approx(9.5 - y, abs=0.02)
  out = ra.shear_y(np.ascontiguousarray(image.transpose(1, 0, 2)), 1.0).astype(float)
  for x in range(10):
    assert np.dot(out[:20, x, 0], np.arange(20)) / out[:20, x, 0].sum() == pytest.approx(9.5 - x, abs=0.02)


def test_invert_solarize_posterize_solarize_add_exact_values():
  image = _ramp()
  assert np.array_equal(ra.invert(image), 255 - image)
  solar = ra.solarize(image, 100)
  assert np.array_equal(solar, np.where(image < 100, image, 255 - image))
  assert np.array_equal(ra.solarize(image, 256), image) and np.array_equal(ra.solarize(image, 0), 255 - image)
  assert np.array_equal(ra.posterize(image, 3), image & 0b11100000)
  assert np.array_equal(ra.posterize(image, 0), np.zeros_like(image)) and ra.posterize(image, 8) is image
  added = ra.solarize_add(image, 110)
  assert np.array_equal(added, np.where(image < 128, np.minimum(image.astype(int) + 110, 255), image))


def test_auto_contrast_stretches_each_channel_and_leaves_a_flat_one():
  image = np.zeros((4, 4, 3), np.uint8)
  image[..., 0] = np.linspace(50, 150, 16).reshape(4, 4).astype(np.uint8)
  image[..., 1] = 77
  image[..., 2] = np.linspace(0, 255, 16).reshape(4, 4).astype(np.uint8)
  out = ra.auto_contrast(image)
  assert out[..., 0].min() == 0 and out[..., 0].max() == 255
  assert np.all(out[..., 1] == 77) and np.array_equal(out[..., 2], image[..., 2])


def test_point_and_enhance_ops_agree_with_pil():
  pil = pytest.importorskip("PIL.Image")
  from PIL import ImageEnhance, ImageOps  # pylint: disable=g-import-not-at-top
  image = np.random.RandomState(0).randint(30, 200, (24, 20, 3)).astype(np.uint8)
  image[3:9, 4:12] = (240, 20, 90)
  ref = pil.fromarray(image)
  assert np.array_equal(ra.equalize(image), np.asarray(ImageOps.equalize(ref)))
  assert np.array_equal(ra.auto_contrast(image), np.asarray(ImageOps.autocontrast(ref)))
  assert np.array_equal(ra.posterize(image, 2), np.asarray(ImageOps.posterize(ref, 2)))
  assert np.array_equal(ra.solarize(image, 128), np.asarray(ImageOps.solarize(ref, 128)))
  for ours, theirs in ((ra.color, ImageEnhance.Color), (ra.contrast, ImageEnhance.Contrast),
                       (ra.brightness, ImageEnhance.Brightness), (ra.sharpness, ImageEnhance.Sharpness)):
    for factor in (0.1, 0.6, 1.9):
      diff = np.abs(ours(image, factor).astype(int) - np.asarray(theirs(ref).enhance(factor)).astype(int))
      assert diff.max() <= 2, (ours.__name__, factor, diff.max())  # PIL truncates where we round


def test_magnitude_maps_follow_timm():
  rng = np.random.default_rng(0)
  image = _ramp()
  plain = dict((o.name, o) for o in ra.OPS)
  inc = dict((o.name, o) for o in ra.INCREASING_OPS)
  assert [o.name for o in ra.OPS
         ][:7] == ["AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd"]
  assert len(ra.OPS) == len(ra.INCREASING_OPS) == 15
  assert plain["Posterize"].arg(10, rng, image) == 4 and inc["PosterizeIncreasing"].arg(10, rng, image) == 0
  assert plain["Solarize"].arg(10, rng, image) == 256 and inc["SolarizeIncreasing"].arg(10, rng, image) == 0
  assert plain["SolarizeAdd"].arg(10, rng, image) == 110
  assert plain["Color"].arg(0, rng, image) == pytest.approx(0.1) and plain["Color"].arg(10, rng,
                                                                                        image) == pytest.approx(1.9)
  assert {round(inc["ContrastIncreasing"].arg(10, rng, image), 6) for _ in range(40)} == {0.1, 1.9}
  assert inc["ContrastIncreasing"].arg(0, rng, image) == 1.0  # increasing set: magnitude 0 is no change
  assert {abs(plain["Rotate"].arg(10, rng, image)) for _ in range(10)} == {30.0}
  assert {abs(plain["ShearX"].arg(5, rng, image)) for _ in range(10)} == {0.15}


def test_spec_parsing_and_defaults():
  spec = ra.parse_randaugment("rand-m9-mstd0.5-inc1")
  assert spec == ra.RandAugmentSpec(9.0, 2, 0.5, 10.0, True, 0.5)
  assert ra.parse_randaugment("rand") == ra.RandAugmentSpec(10.0, 2, 0.0, 10.0, False, 0.5)
  assert ra.parse_randaugment("rand-n3-m7-p1-inc0").num_ops == 3
  assert ra.parse_randaugment("rand-m9-mstd101").magnitude_std == float("inf")
  assert ra.parse_randaugment("rand-m15-mmax20").magnitude == 15.0
  assert ra.describe(spec) == "rand-m9-n2-mstd0.5-inc1"


@pytest.mark.parametrize("spec, why", [
    ("rand-m9-x", "unknown part 'x'"),
    ("auto-m9", "must start with 'rand'"),
    ("rand-m11", "above its maximum"),
    ("rand-n0", "integer >= 1"),
    ("rand-n1.5", "integer >= 1"),
    ("rand-inc2", "inc is 0 or 1"),
    ("rand-p2", "probability"),
    ("rand-m9-m8", "twice"),
    ("rand-m", "unknown part 'm'"),
    ("", "must start with 'rand'"),
])
def test_spec_errors_are_one_line_naming_the_part_and_the_format(spec, why):
  with pytest.raises(ValueError) as info:
    ra.parse_randaugment(spec)
  message = str(info.value)
  assert "\n" not in message and why in message and repr(spec) in message
  assert "expected rand-m<magnitude" in message


def test_randaugment_is_a_pure_function_of_its_rng_and_changes_images():
  image = np.random.RandomState(1).randint(0, 256, (28, 28, 3)).astype(np.uint8)
  aug = ra.RandAugment("rand-m9-mstd0.5-inc1")
  a = [aug.apply(image, np.random.default_rng([5, i])) for i in range(20)]
  b = [aug.apply(image, np.random.default_rng([5, i])) for i in range(20)]
  assert all(np.array_equal(x, y) for x, y in zip(a, b))
  assert sum(not np.array_equal(x, image) for x in a) >= 10  # 2 ops at p 0.5: most images change
  assert all(x.dtype == np.uint8 and x.shape == image.shape for x in a)
  never = ra.RandAugment("rand-m9-p0")
  assert all(never.apply(image, np.random.default_rng(i)) is image for i in range(5))


def test_randaugment_pickles_for_spawned_workers():
  aug = ra.RandAugment("rand-m7-n3-inc1")
  again = pickle.loads(pickle.dumps(aug))
  image = np.random.RandomState(2).randint(0, 256, (12, 12, 3)).astype(np.uint8)
  assert again.spec == aug.spec and np.array_equal(again.apply(image, np.random.default_rng(3)),
                                                   aug.apply(image, np.random.default_rng(3)))
