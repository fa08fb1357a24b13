"""Losses (CE with ignore, OHEM, aux weights, soft CE, model regularizer) and fast crop schedules."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from csst_edge.errors import ConfigError
from csst_edge.train.losses import OhemCrossEntropy, SegLoss, SoftCrossEntropy, build_criterion, model_regularizer
from csst_edge.train.schedules import CropSchedule


def _logits_with_true_class_probs(probs: list[float]) -> torch.Tensor:
    """2-class logits over a 1 x len(probs) image where p(class 0) = probs[i]."""
    p = torch.tensor(probs)
    logit0 = torch.log(p) - torch.log1p(-p)
    return torch.stack([logit0, torch.zeros_like(logit0)]).reshape(1, 2, 1, len(probs))


def test_ohem_averages_only_pixels_below_the_threshold():
    probs = [0.95, 0.9, 0.8, 0.6, 0.3, 0.1]
    logits = _logits_with_true_class_probs(probs)
    target = torch.zeros(1, 1, len(probs), dtype=torch.long)
    loss = OhemCrossEntropy(thresh=0.7, min_kept=1)(logits, target)
    expected = sum(-math.log(p) for p in (0.6, 0.3, 0.1)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_ohem_keeps_at_least_min_kept_hardest_pixels_and_skips_ignored_ones():
    probs = [0.95, 0.9, 0.8, 0.6, 0.3, 0.1]
    logits = _logits_with_true_class_probs(probs)
    target = torch.tensor([[[0, 0, 0, 0, 0, 255]]])  # the hardest pixel is ignored
    loss = OhemCrossEntropy(thresh=0.7, min_kept=4)(logits, target)
    expected = sum(-math.log(p) for p in (0.9, 0.8, 0.6, 0.3)) / 4  # the 4 hardest of the 5 valid pixels
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert OhemCrossEntropy()(logits, torch.full_like(target, 255)).item() == 0.0


def test_cross_entropy_ignores_the_ignore_index_and_unknown_names_fail():
    logits = torch.randn(2, 3, 4, 5)
    target = torch.randint(0, 3, (2, 4, 5))
    target[0, 0] = 255
    ce = build_criterion("ce", ignore_index=255)
    valid = target != 255
    manual = F.cross_entropy(logits.permute(0, 2, 3, 1)[valid], target[valid])
    assert ce(logits, target).item() == pytest.approx(manual.item(), rel=1e-6)
    with pytest.raises(ConfigError, match="loss.name"):
        build_criterion("dice")


def test_seg_loss_weights_aux_heads_and_resizes_low_resolution_logits():
    target = torch.randint(0, 3, (2, 8, 8))
    main, aux1, aux2 = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4)
    ce = build_criterion("ce")
    total, parts = SegLoss(ce, [0.4, 1.0])((main, [aux1, aux2]), target)
    aux2_up = F.interpolate(aux2, size=(8, 8), mode="bilinear", align_corners=False)
    expected = ce(main, target) + 0.4 * ce(aux1, target) + 1.0 * ce(aux2_up, target)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(parts) == {"main", "aux0", "aux1"}
    only_main, _ = SegLoss(ce, [])(main, target)
    assert only_main.item() == pytest.approx(ce(main, target).item())


def test_soft_cross_entropy_with_one_hot_top1_equals_hard_cross_entropy():
    logits = torch.randn(2, 4, 6, 6)
    target = torch.randint(0, 4, (2, 6, 6))
    ids = torch.stack([target, torch.zeros_like(target)], 1)
    probs = torch.stack([torch.ones(2, 6, 6), torch.zeros(2, 6, 6)], 1)
    probs[0, :, 0, 0] = 0  # a pixel with no mass (padding) carries no loss
    valid = probs.sum(1) > 0
    hard = F.cross_entropy(logits.permute(0, 2, 3, 1)[valid], target[valid])
    assert SoftCrossEntropy()(logits, ids, probs).item() == pytest.approx(hard.item(), rel=1e-5)


def test_soft_cross_entropy_matches_the_distribution_formula():
    logits = torch.randn(1, 3, 1, 1)
    ids = torch.tensor([2, 0]).reshape(1, 2, 1, 1)
    probs = torch.tensor([0.6, 0.2]).reshape(1, 2, 1, 1)  # renormalised to 0.75 / 0.25
    log_p = F.log_softmax(logits, 1).flatten()
    expected = -(0.75 * log_p[2] + 0.25 * log_p[0])
    assert SoftCrossEntropy()(logits, ids, probs).item() == pytest.approx(expected.item(), rel=1e-5)


def test_model_regularizer_is_log_c_for_uniform_predictions_and_grows_with_confidence():
    uniform = torch.zeros(1, 5, 2, 2)
    assert model_regularizer(uniform, 0.1).item() == pytest.approx(0.1 * math.log(5), rel=1e-6)
    confident = torch.zeros(1, 5, 2, 2)
    confident[:, 0] = 10
    assert model_regularizer(confident, 0.1).item() > model_regularizer(uniform, 0.1).item()


def _plan(kind, epochs=6, max_batch=None):
    return [
        (e.crop_h, e.crop_w, e.batch_size)
        for e in CropSchedule(kind, (256, 512), 8, epochs, (0.5, 0.75, 1.0), max_batch=max_batch).plan()
    ]


def test_each_schedule_yields_the_promised_crop_and_batch_sequence():
    small, mid, full = (128, 256, 32), (192, 384, 14), (256, 512, 8)  # batch 8 * (1/s)^2, rounded
    assert _plan("constant") == [full] * 6
    assert _plan("coarse2fine") == [small, small, mid, mid, full, full]
    assert _plan("fine2coarse") == [full, full, mid, mid, small, small]
    assert _plan("coarse2fine+") == [small, mid, full, small, mid, full]
    assert _plan("fine2coarse+") == [full, mid, small, full, mid, small]


def test_pixels_per_batch_stay_constant_and_the_cap_scales_the_lr():
    for e in CropSchedule("coarse2fine+", (256, 512), 8, 3).plan():
        assert abs(e.crop_h * e.crop_w * e.batch_size / (256 * 512 * 8) - 1) < 0.05
        assert e.lr_scale == pytest.approx(min(1.0, e.crop_h * e.crop_w * e.batch_size / (256 * 512 * 8)), abs=1e-3)
    capped = CropSchedule("coarse2fine+", (256, 512), 8, 3, max_batch=16).at(0)
    assert capped.batch_size == 16 and capped.lr_scale == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="crop_schedule"):
        CropSchedule("zigzag", (256, 512), 8, 3)
