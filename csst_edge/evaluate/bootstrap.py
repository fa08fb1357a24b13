"""Paired bootstrap over val images: how sure is a ΔmIoU between two models evaluated on the same images?

    result = paired_bootstrap(before_mats, after_mats)   # (N, C, C) per-image confusion matrices each
    result.delta_miou, result.low, result.high, result.verdict   # "better" / "worse" / "no detectable change"

A resample draws N val images with replacement; both models' matrices of the drawn images are summed (the same
images for both: the pairing is what makes the interval narrow when the models err on the same hard images), and
mIoU / per-class IoU are recomputed from the sums exactly as `ConfusionMatrix.compute` does (a class absent from
both ground truth and prediction is nan and leaves the mean). The interval is the percentile interval of the
resampled differences. Pure numpy; the resamples are one matrix product (counts × per-image matrices).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

BETTER, WORSE, UNCHANGED = "better", "worse", "no detectable change"


@dataclass
class ClassDelta:
    name: str
    delta: float | None  # after - before IoU on the whole val set (None: the class is absent from both)
    low: float | None
    high: float | None
    verdict: str


@dataclass
class BootstrapResult:
    delta_miou: float  # after - before on the whole val set (fractions: 0.01 = one point)
    low: float | None  # the interval: `confidence` of the resampled differences lie in [low, high]
    high: float | None  # (None when no resample has a labelled pixel)
    verdict: str  # better (low > 0) | worse (high < 0) | no detectable change
    confidence: float
    resamples: int
    images: int
    seed: int
    per_class: list[ClassDelta] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def iou_from_confusion(mats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mIoU (...), per-class IoU (..., C)) of confusion matrices (..., C, C), rows = ground truth; nan where a
    class is in neither ground truth nor prediction (and an all-nan row's mIoU is nan)."""
    mats = np.asarray(mats, np.float64)
    tp = np.diagonal(mats, axis1=-2, axis2=-1)
    union = mats.sum(-1) + mats.sum(-2) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / union
    valid = ~np.isnan(iou)
    count = valid.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        miou = np.where(count > 0, np.where(valid, iou, 0.0).sum(-1) / count, np.nan)
    return miou, iou


def verdict(low: float | None, high: float | None) -> str:
    """The interval in words: 'better' when it lies above 0, 'worse' below 0, otherwise 'no detectable change'."""
    if low is None or high is None or np.isnan(low) or np.isnan(high):
        return UNCHANGED
    if low > 0:
        return BETTER
    if high < 0:
        return WORSE
    return UNCHANGED


def paired_bootstrap(
    before: np.ndarray,
    after: np.ndarray,
    class_names: list[str] | None = None,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapResult:
    """Interval for after - before mIoU (and per class) from per-image confusion matrices (N, C, C) of two models
    on the same N images in the same order. Seeded: the same inputs give the same interval."""
    before = np.asarray(before, np.int64)
    after = np.asarray(after, np.int64)
    if before.shape != after.shape or before.ndim != 3 or before.shape[1] != before.shape[2]:
        raise ValueError(f"need two (images, C, C) confusion stacks of one shape, got {before.shape} and {after.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    n, c, _ = before.shape
    names = list(class_names) if class_names is not None else [str(i) for i in range(c)]
    if len(names) != c:
        raise ValueError(f"{len(names)} class names for {c} classes")
    miou_b, iou_b = iou_from_confusion(before.sum(0))
    miou_a, iou_a = iou_from_confusion(after.sum(0))
    delta_miou = float(miou_a - miou_b)
    delta_class = iou_a - iou_b
    if n == 0:
        nan = float("nan")
        return BootstrapResult(nan, nan, nan, UNCHANGED, confidence, resamples, 0, seed, [])

    # counts[b, i]: how often image i is drawn in resample b; summing the drawn matrices is one product
    rng = np.random.default_rng(seed)
    counts = np.zeros((resamples, n), np.int64)
    draws = rng.integers(0, n, size=(resamples, n))
    np.add.at(counts, (np.arange(resamples)[:, None], draws), 1)
    sums_b = (counts @ before.reshape(n, c * c)).reshape(resamples, c, c)
    sums_a = (counts @ after.reshape(n, c * c)).reshape(resamples, c, c)
    rm_b, ri_b = iou_from_confusion(sums_b)
    rm_a, ri_a = iou_from_confusion(sums_a)
    tail = 100 * (1 - confidence) / 2
    low, high = _interval(rm_a - rm_b, tail)
    per_class = []
    for k, name in enumerate(names):
        d = float(delta_class[k])
        if np.isnan(d):
            per_class.append(ClassDelta(name, None, None, None, UNCHANGED))
            continue
        lo, hi = _interval(ri_a[:, k] - ri_b[:, k], tail)
        per_class.append(ClassDelta(name, d, lo, hi, verdict(lo, hi)))
    return BootstrapResult(delta_miou, low, high, verdict(low, high), confidence, resamples, n, seed, per_class)


def _interval(values: np.ndarray, tail: float) -> tuple[float | None, float | None]:
    """Percentile interval of the finite values (a resample without the class gives nan and is left out)."""
    values = values[~np.isnan(values)]
    if values.size == 0:
        return None, None
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)
