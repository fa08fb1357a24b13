"""The paired bootstrap of the round gate: a model against itself gives exactly [0, 0], a clearly better model's
interval lies above 0, and a two-image case whose resample distribution is known by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from csst_edge.evaluate import ConfusionMatrix
from csst_edge.evaluate.bootstrap import BETTER, UNCHANGED, WORSE, iou_from_confusion, paired_bootstrap, verdict
from csst_edge.evaluate.evaluator import per_image_confusion


def _mats(rng, n, c, accuracy, pixels=400):
    """(n, c, c) per-image confusion matrices of a model that gets `accuracy` of each image's pixels right."""
    mats = np.zeros((n, c, c), np.int64)
    for i in range(n):
        gt = rng.integers(0, c, pixels)
        wrong = rng.random(pixels) > accuracy
        pred = np.where(wrong, (gt + rng.integers(1, c, pixels)) % c, gt)
        np.add.at(mats[i], (gt, pred), 1)
    return mats


def test_iou_from_confusion_matches_confusion_matrix():
    rng = np.random.default_rng(0)
    target = torch.from_numpy(rng.integers(0, 4, (2, 16, 16)))
    target[0, :2] = 255  # ignored
    pred = torch.from_numpy(rng.integers(0, 3, (2, 16, 16)))  # class 3 is never predicted
    cm = ConfusionMatrix(4)
    cm.update(pred, target)
    expected = cm.compute()
    mats = per_image_confusion(pred, target, 4)
    assert mats.shape == (2, 4, 4) and (mats.sum(0) == np.array(expected["confusion"])).all()
    miou, iou = iou_from_confusion(mats.sum(0))
    assert miou == pytest.approx(expected["miou"]) and np.allclose(iou, expected["per_class_iou"])
    # a class in neither ground truth nor prediction is nan and leaves the mean
    miou, iou = iou_from_confusion(np.array([[5, 0, 0], [0, 0, 0], [1, 0, 2]]))
    assert np.isnan(iou[1]) and miou == pytest.approx((5 / 6 + 2 / 3) / 2)


def test_self_against_self_is_exactly_zero():
    mats = _mats(np.random.default_rng(1), 30, 5, accuracy=0.7)
    r = paired_bootstrap(mats, mats, [f"c{i}" for i in range(5)])
    assert (r.delta_miou, r.low, r.high) == (0.0, 0.0, 0.0)
    assert r.verdict == UNCHANGED and r.images == 30 and r.resamples == 1000
    assert all((c.delta, c.low, c.high, c.verdict) == (0.0, 0.0, 0.0, UNCHANGED) for c in r.per_class)


def test_clearly_better_model_lies_above_zero_and_is_seeded():
    rng = np.random.default_rng(2)
    weak, strong = _mats(rng, 30, 4, accuracy=0.6), _mats(rng, 30, 4, accuracy=0.8)
    up = paired_bootstrap(weak, strong)
    assert 0 < up.low <= up.delta_miou <= up.high and up.verdict == BETTER
    assert all(c.low > 0 and c.verdict == BETTER for c in up.per_class)
    down = paired_bootstrap(strong, weak)
    assert down.high < 0 and down.verdict == WORSE
    assert paired_bootstrap(weak, strong, seed=0) == up  # same seed, same interval
    assert paired_bootstrap(weak, strong, seed=1).low != up.low


def test_pairing_narrows_the_interval():
    """Images differ a lot in difficulty (30-95 % accuracy), and a model 2 points more accurate on every one is
    still detected as better: both models are resampled on the same images, so the spread between images cancels
    (resampled independently, the same two models look the same)."""
    rng = np.random.default_rng(3)
    n, c = 40, 3
    before, after = np.zeros((n, c, c), np.int64), np.zeros((n, c, c), np.int64)
    for i in range(n):
        acc = rng.uniform(0.3, 0.95)  # hard and easy images
        for mats, a in ((before, acc), (after, acc + 0.02)):
            right = int(1000 * a)
            mats[i] = (
                np.diag([right] * c) + (1000 - right) * (np.ones((c, c), np.int64) - np.eye(c, dtype=np.int64)) // 2
            )
    r = paired_bootstrap(before, after)
    assert r.verdict == BETTER and r.high - r.low < 0.01
    # resampling the two models' images independently instead cannot tell them apart
    draw = np.random.default_rng(0).integers(0, n, size=(2, 1000, n))
    unpaired = iou_from_confusion(after[draw[0]].sum(1))[0] - iou_from_confusion(before[draw[1]].sum(1))[0]
    low, high = np.percentile(unpaired, [2.5, 97.5])
    assert low < 0 < high


def test_two_images_by_hand():
    """Image 1 has only class 0, image 2 only class 1 (10 pixels each). The new model is right everywhere; the old
    one is right on image 1 and calls all of image 2 class 0. A resample is {1,1}, {1,2} or {2,2}:
    {1,1}: both mIoU 1 → Δ 0; {2,2}: old IoU0 = 0/20, IoU1 = 0/20 → mIoU 0, Δ +1;
    {1,2}: old IoU0 = 10/20, IoU1 = 0/10 → mIoU 0.25, Δ +0.75 (the whole set's Δ). Probabilities 1/4, 1/2, 1/4."""
    old = np.array([[[10, 0], [0, 0]], [[0, 0], [10, 0]]])
    new = np.array([[[10, 0], [0, 0]], [[0, 0], [0, 10]]])
    r = paired_bootstrap(old, new, ["a", "b"], resamples=4000, seed=0)
    assert r.delta_miou == pytest.approx(0.75)
    assert (r.low, r.high) == (0.0, 1.0) and r.verdict == UNCHANGED  # Δ = 0 keeps a quarter of the resamples
    # the middle half of the resamples is {1,2} (Δ 0.75); 0 and 1 hold a quarter each
    mid = paired_bootstrap(old, new, resamples=4000, confidence=0.4, seed=0)  # percentiles 30 and 70
    assert (mid.low, mid.high) == (0.75, 0.75) and mid.verdict == BETTER
    wide = paired_bootstrap(old, new, resamples=4000, confidence=0.6, seed=0)  # percentiles 20 and 80
    assert (wide.low, wide.high) == (0.0, 1.0)
    # class a: Δ 0 in {1,1}, 1 - 0.5 in {1,2}; in {2,2} the new model has no class a at all (nan, left out)
    a, b = r.per_class
    assert a.delta == pytest.approx(0.5) and (a.low, a.high) == (0.0, 0.5)
    # class b: Δ 1 wherever it is present, so its interval is [1, 1]: better
    assert b.delta == pytest.approx(1.0) and (b.low, b.high) == (1.0, 1.0) and b.verdict == BETTER


def test_verdict_words_and_bad_input():
    assert verdict(0.001, 0.02) == BETTER and verdict(-0.03, -0.001) == WORSE
    assert verdict(-0.01, 0.01) == verdict(0.0, 0.0) == verdict(None, None) == UNCHANGED
    with pytest.raises(ValueError, match="one shape"):
        paired_bootstrap(np.zeros((3, 2, 2)), np.zeros((4, 2, 2)))
    with pytest.raises(ValueError, match="class names"):
        paired_bootstrap(np.zeros((3, 2, 2)), np.zeros((3, 2, 2)), ["a"])
