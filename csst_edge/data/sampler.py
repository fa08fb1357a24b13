"""Centroid sampling: epochs in which every class is drawn equally often, and crops placed around the draw.

An epoch of N samples takes N/C centroids from each of the C classes that have any (classes with fewer centroids
than their share are oversampled, cycling through a fresh permutation each pass, so every centroid is used before
any repeats). A `class_uniform_fraction` below 1 replaces part of the epoch with plain random images, which
keeps the natural class statistics in view (the paper's CS can over-correct on tiny classes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from csst_edge.data.centroids import CentroidIndex


def crop_window_containing(
    h: int, w: int, crop_h: int, crop_w: int, y: int, x: int, rng: np.random.Generator
) -> tuple[int, int]:
    """(top, left) of a crop_h x crop_w window inside an h x w image, uniform among the windows containing (y, x).

    The image must be at least as large as the crop (pad it first). A point outside the image is clamped in.
    """
    if h < crop_h or w < crop_w:
        raise ValueError(f"image {h}x{w} is smaller than the crop {crop_h}x{crop_w}; pad it first")
    y, x = min(max(int(y), 0), h - 1), min(max(int(x), 0), w - 1)
    top = int(rng.integers(max(0, y - crop_h + 1), min(y, h - crop_h) + 1))
    left = int(rng.integers(max(0, x - crop_w + 1), min(x, w - crop_w) + 1))
    return top, left


@dataclass(frozen=True)
class CentroidRef:
    image_id: int  # position in the index's file list
    cls: int  # the class the draw was made for, -1 for a plain random image
    y: int  # -1 for a plain random image (crop anywhere)
    x: int


class CentroidSampler:
    """Deterministic epochs of `num_samples` draws from a CentroidIndex; `sample_epoch(e)` depends only on
    (seed, e)."""

    def __init__(
        self,
        index: CentroidIndex,
        num_samples: int,
        class_uniform_fraction: float = 1.0,
        seed: int = 0,
        classes: list[int] | None = None,
    ):
        if not 0.0 <= class_uniform_fraction <= 1.0:
            raise ValueError(f"class_uniform_fraction must be in [0, 1], got {class_uniform_fraction}")
        if index.num_images == 0:
            raise ValueError("the centroid index has no images")
        self.index, self.num_samples, self.seed = index, int(num_samples), int(seed)
        self.class_uniform_fraction = float(class_uniform_fraction)
        wanted = range(index.num_classes) if classes is None else classes
        self.rows_by_class = {c: index.rows_of_class(c) for c in wanted}
        self.present = [c for c, rows in self.rows_by_class.items() if rows.size]
        # classes that have no centroid at all cannot be drawn; callers report them (see `missing_classes`)
        self.missing_classes = [c for c, rows in self.rows_by_class.items() if not rows.size]
        if not self.present:
            self.class_uniform_fraction = 0.0

    def per_class_counts(self, epoch: int) -> dict[int, int]:
        """How many centroids each present class gets in `epoch` (equal, the remainder spread at random)."""
        n_uniform = round(self.num_samples * self.class_uniform_fraction)
        if not self.present or n_uniform == 0:
            return {}
        rng = np.random.default_rng([self.seed, epoch, 1])
        base, rest = divmod(n_uniform, len(self.present))
        counts = {c: base for c in self.present}
        for c in rng.choice(self.present, size=rest, replace=False):
            counts[int(c)] += 1
        return counts

    def sample_epoch(self, epoch: int) -> list[CentroidRef]:
        rng = np.random.default_rng([self.seed, epoch, 2])
        refs: list[CentroidRef] = []
        idx = self.index
        for c, k in self.per_class_counts(epoch).items():
            if k == 0:  # fewer samples than classes: this class sits the epoch out
                continue
            rows = self.rows_by_class[c]
            reps = -(-k // rows.size)
            chosen = np.concatenate([rng.permutation(rows) for _ in range(reps)])[:k]
            refs += [CentroidRef(int(idx.image_id[r]), c, int(idx.y[r]), int(idx.x[r])) for r in chosen]
        n_random = self.num_samples - len(refs)
        if n_random > 0:
            reps = -(-n_random // idx.num_images)
            images = np.concatenate([rng.permutation(idx.num_images) for _ in range(reps)])[:n_random]
            refs += [CentroidRef(int(i), -1, -1, -1) for i in images]
        order = rng.permutation(len(refs))
        return [refs[i] for i in order]

    def describe(self, class_names: list[str] | None = None) -> str:
        name = (lambda c: class_names[c]) if class_names else str
        text = (
            f"centroid sampling: {len(self.present)} classes x "
            f"~{self.num_samples * self.class_uniform_fraction / max(1, len(self.present)):.0f}"
            f" draws/epoch, {1 - self.class_uniform_fraction:.0%} plain random"
        )
        if self.missing_classes:
            text += f"; no centroids for {', '.join(name(c) for c in self.missing_classes)} (skipped)"
        return text
