"""Mixup / CutMix: the spec checks, the per-batch decision, partners at the mirrored position of the global batch,
exact pixels and weights, 2 ranks x B = 1 rank x 2B with mixing on (also through bad-file replacements), eval and
off_epoch leave batches alone."""
import numpy as np
import pytest

from input import mixing
from input.augment import AugmentSpec
from input.dataset_base import ArrayDataset
from input.datasets import open_dataset
from input.pipeline import InputPipeline
from input.sampling import BatchPlan
from tests.input_helpers import noisy, write_bad_files, write_image


def _indexed(n, size=8):
  """Example i is a flat image of value 2 * i (mod 256), labelled i % 10."""
  values = (2 * np.arange(n) % 256).astype(np.uint8)
  images = values[:, None, None, None] * np.ones((1, size, size, 3), np.uint8)
  return ArrayDataset("indexed", "train", [str(c) for c in range(10)], images, np.arange(n) % 10)


def _take(pipe, count, first=None):
  gen = pipe.batches(first)
  return [next(gen) for _ in range(count)]


@pytest.mark.parametrize("kwargs, why", [
    (dict(mixup_alpha=-0.1), "mixup_alpha=-0.1"),
    (dict(cutmix_alpha=float("nan")), "cutmix_alpha=nan"),
    (dict(prob=1.5), "prob=1.5"),
    (dict(switch_prob=-1), "switch_prob=-1"),
    (dict(off_epoch=-2), "off_epoch=-2"),
])
def test_mix_spec_refuses_bad_values_with_one_line(kwargs, why):
  with pytest.raises(ValueError, match=why):
    mixing.MixSpec(**kwargs)


def test_decision_is_a_pure_function_and_follows_prob_switch_and_off_epoch():
  spec = mixing.MixSpec(0.8, 1.0, prob=0.8, switch_prob=0.5, off_epoch=3)
  decisions = [mixing.decide(spec, 7, 0, k, (28, 28)) for k in range(400)]
  assert decisions == [mixing.decide(spec, 7, 0, k, (28, 28)) for k in range(400)]
  kinds = [d.kind for d in decisions]
  assert 60 < kinds.count(None) < 100 and 130 < kinds.count("cutmix") < 200 and 130 < kinds.count("mixup") < 200
  assert all(0.0 <= d.lam <= 1.0 for d in decisions)
  assert mixing.decide(spec, 7, 3, 5, (28, 28)) == mixing.NO_MIX  # off from epoch 3 on
  assert {mixing.decide(mixing.MixSpec(0.0, 1.0), 1, 0, k, (8, 8)).kind for k in range(20)} == {"cutmix"}
  assert {mixing.decide(mixing.MixSpec(0.4), 1, 0, k, (8, 8)).kind for k in range(20)} == {"mixup"}
  assert mixing.decide(mixing.MixSpec(), 1, 0, 0, (8, 8)) == mixing.NO_MIX


def test_cutmix_lam_is_the_unpasted_area_fraction():
  spec = mixing.MixSpec(cutmix_alpha=1.0)
  for k in range(50):
    d = mixing.decide(spec, 0, 0, k, (20, 30))
    own, partner = np.zeros((1, 20, 30, 3), np.uint8), np.full((1, 20, 30, 3), 255, np.uint8)
    mixing.mix_rows(d, own, partner)
    assert d.kind == "cutmix" and d.lam == pytest.approx(float((own == 0).mean()))
    y0, y1, x0, x1 = d.box
    assert 0 <= y0 <= y1 <= 20 and 0 <= x0 <= x1 <= 30


def test_mixup_blends_and_soft_targets_sum_to_one():
  d = mixing.MixDecision("mixup", 0.3, None)
  own, partner = np.full((2, 4, 4, 3), 100, np.uint8), np.full((2, 4, 4, 3), 201, np.uint8)
  mixing.mix_rows(d, own, partner)
  assert np.all(own == int(np.rint(0.3 * 100 + 0.7 * 201)))
  targets = mixing.soft_targets([1, 2], [3, 2], [0.3, 0.3], 5)
  np.testing.assert_allclose(targets.sum(axis=1), 1.0)
  np.testing.assert_allclose(targets[0], [0, 0.3, 0, 0.7, 0], rtol=1e-6)
  np.testing.assert_allclose(targets[1], [0, 0, 1, 0, 0])


def test_partners_are_the_mirrored_positions_of_the_global_batch():
  one = BatchPlan(64, 8, True, seed=3)
  _, idx = one.batch(2)
  assert np.array_equal(one.mix_partners(2)[1], idx[::-1])
  assert np.array_equal(one.partner_rows(), np.arange(8)[::-1])
  ranks = [BatchPlan(64, 4, True, seed=3, rank=r, num_ranks=2) for r in range(2)]
  for k in (0, 5, 9):
    merged = np.empty(8, np.int64)
    partners = np.empty(8, np.int64)
    for r, plan in enumerate(ranks):
      merged[r::2] = plan.batch(k)[1]  # rank r's row j is global position r + 2 j
      partners[r::2] = plan.mix_partners(k)[1]
    assert np.array_equal(merged, one.batch(k)[1]) and np.array_equal(partners, merged[::-1])
  assert all(np.all(plan.partner_rows() == -1) for plan in ranks)  # an even rank count: every partner is remote


def test_mixed_labels_are_the_partners_and_weights_are_in_0_1():
  ds = _indexed(40)
  with InputPipeline(ds, 8, 10, True, workers=0, seed=1, augment="none", mix=mixing.MixSpec(1.0)) as pipe:
    for _, labels, mask, mix_labels, weight in _take(pipe, 8):
      assert np.all(mask == 1) and np.all((weight >= 0) & (weight <= 1)) and len(set(weight)) == 1
      assert mix_labels.dtype == np.int32 and weight.dtype == np.float32
      assert np.array_equal(mix_labels, labels[::-1])  # one rank: the partner of row i is row B - 1 - i
      np.testing.assert_allclose(mixing.soft_targets(labels, mix_labels, weight, 10).sum(axis=1), 1.0, rtol=1e-6)


def test_mixup_rows_blend_the_exact_unmixed_partner_pixels():
  ds = _indexed(40)
  spec = mixing.MixSpec(1.0)
  with InputPipeline(ds, 8, 10, True, workers=0, seed=1, augment="none") as plain, \
      InputPipeline(ds, 8, 10, True, workers=0, seed=1, augment="none", mix=spec) as mixed:
    for (p_img, p_lab, _), (m_img, m_lab, _, mix_lab, w) in zip(_take(plain, 6), _take(mixed, 6)):
      assert np.array_equal(p_lab, m_lab) and np.array_equal(mix_lab, p_lab[::-1])
      expected = np.rint(w[0] * p_img.astype(np.float32) + (1 - w[0]) * p_img[::-1].astype(np.float32))
      assert np.array_equal(m_img, expected.astype(np.uint8))


def _all_options():
  return AugmentSpec("pad", 2, True, "rand-m9-mstd0.5-inc1", 0.3, 0.5)


def _bad_folder(root):
  for i in range(16):
    write_image(str(root / ("c%d" % (i % 2)) / ("%02d.png" % i)), noisy(i, (12, 12)))
  write_bad_files(str(root / "c1"))


@pytest.mark.parametrize("source", ["array", "files_with_bad_ones"])
def test_two_ranks_of_b_equal_one_rank_of_2b_with_mixing_on(source, tmp_path):
  if source == "array":
    ds = ArrayDataset("r", "train", [str(c) for c in range(10)], np.stack([noisy(i, (12, 12)) for i in range(48)]),
                      np.arange(48) % 10)
  else:
    _bad_folder(tmp_path)
    ds = open_dataset("imagefolder", str(tmp_path), "train")
  spec = mixing.MixSpec(0.8, 1.0, prob=0.9, off_epoch=2)
  common = dict(seed=5, augment=_all_options(), mix=spec)
  with InputPipeline(ds, 12, 8, True, workers=1, **common) as pipe:
    steps = pipe.steps_per_epoch
    single = _take(pipe, 2 * steps + 1)  # into epoch 2, where mixing is off
  per_rank = []
  for rank in range(2):
    with InputPipeline(ds, 12, 4, True, workers=rank, rank=rank, num_ranks=2, **common) as pipe:
      assert pipe.steps_per_epoch == steps
      per_rank.append(_take(pipe, 2 * steps + 1))
  kinds = set()
  for k, whole in enumerate(single):
    for field in range(5):
      merged = np.empty_like(whole[field])
      merged[0::2], merged[1::2] = per_rank[0][k][field], per_rank[1][k][field]
      assert np.array_equal(merged, whole[field]), (k, field)
    kinds.add(float(whole[4][0]) < 1.0)
  assert kinds == {True, False}
  last = single[-1]
  assert np.array_equal(last[3], last[1]) and np.all(last[4] == 1.0)  # epoch 2 >= off_epoch: unmixed


def test_eval_and_no_mix_spec_change_nothing():
  ds = _indexed(30)
  with InputPipeline(ds, 8, 7, False, workers=0, mix=mixing.MixSpec(0.8, 1.0)) as with_mix, \
      InputPipeline(ds, 8, 7, False, workers=0) as without:
    a, b = list(with_mix.batches()), list(without.batches())
  assert all(len(x) == 3 for x in a) and len(a) == len(b)
  assert all(np.array_equal(x, y) for pa, pb in zip(a, b) for x, y in zip(pa, pb))


def test_spawned_workers_make_the_same_mixed_batches():
  ds = _indexed(48, size=12)
  common = dict(seed=2, augment=_all_options(), mix=mixing.MixSpec(0.8, 1.0), rank=1, num_ranks=2)
  with InputPipeline(ds, 12, 4, True, workers=0, **common) as local, \
      InputPipeline(ds, 12, 4, True, workers=1, start_method="spawn", **common) as spawned:
    for a, b in zip(_take(local, 3), _take(spawned, 3)):
      assert all(np.array_equal(x, y) for x, y in zip(a, b))
