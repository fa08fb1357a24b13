"""Class balance: what the label maps contain, and what an epoch of training crops would show with and without
centroid sampling (the number that tells whether CS is doing its job on a dataset)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from csst_edge.data.centroids import CentroidIndex
from csst_edge.data.imageio import read_label
from csst_edge.data.sampler import CentroidSampler, crop_window_containing


@dataclass
class CropShares:
    pixel_share: np.ndarray  # (C,) share of labelled crop pixels per class
    presence: np.ndarray  # (C,) share of crops that contain the class at all
    num_crops: int


def crop_class_shares(
    index: CentroidIndex,
    crop: tuple[int, int],
    num_samples: int = 500,
    centroid: bool = True,
    class_uniform_fraction: float = 1.0,
    seed: int = 0,
    luts=None,
) -> CropShares:
    """Simulate one epoch of `num_samples` crops (no scaling or flipping) and count the classes inside them.

    Each label map is read once however often it is drawn; `luts` (one per index file) remaps raw ids.
    """
    sampler = CentroidSampler(index, num_samples, class_uniform_fraction if centroid else 0.0, seed=seed)
    refs = sampler.sample_epoch(0)
    by_image = defaultdict(list)
    for r in refs:
        by_image[r.image_id].append(r)
    rng = np.random.default_rng([seed, 3])
    c = index.num_classes
    pixels = np.zeros(c, np.int64)
    presence = np.zeros(c, np.int64)
    for image_id in sorted(by_image):
        label = read_label(index.files[image_id], None if luts is None else luts[image_id])
        h, w = label.shape
        ch, cw = min(crop[0], h), min(crop[1], w)
        for r in by_image[image_id]:
            if r.y < 0:
                top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            else:
                top, left = crop_window_containing(h, w, ch, cw, r.y, r.x, rng)
            counts = np.bincount(label[top : top + ch, left : left + cw].ravel(), minlength=256)[:c]
            pixels += counts
            presence += counts > 0
    return CropShares(pixels / max(1, pixels.sum()), presence / max(1, len(refs)), len(refs))


def class_balance_rows(
    index: CentroidIndex,
    class_names: list[str],
    crop: tuple[int, int],
    num_samples: int = 500,
    seed: int = 0,
    luts=None,
) -> list[dict]:
    """One row per class: pixel share, component count, and crop shares without / with centroid sampling."""
    pixels = index.pixels_per_class()
    comps = index.components_per_class()
    plain = crop_class_shares(index, crop, num_samples, centroid=False, seed=seed, luts=luts)
    cs = crop_class_shares(index, crop, num_samples, centroid=True, seed=seed, luts=luts)
    total = max(1, int(pixels.sum()))
    return [
        {
            "class": class_names[i] if i < len(class_names) else str(i),
            "pixel_share": pixels[i] / total,
            "components": int(comps[i]),
            "crop_share_random": float(plain.pixel_share[i]),
            "crop_share_centroid": float(cs.pixel_share[i]),
            "crop_presence_random": float(plain.presence[i]),
            "crop_presence_centroid": float(cs.presence[i]),
        }
        for i in range(index.num_classes)
    ]


def balance_table(rows: list[dict], title: str):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col, justify in (
        ("class", "left"),
        ("pixels %", "right"),
        ("components", "right"),
        ("crop px % random", "right"),
        ("crop px % CS", "right"),
        ("in crops % random", "right"),
        ("in crops % CS", "right"),
    ):
        table.add_column(col, justify=justify)
    for r in rows:
        table.add_row(
            r["class"],
            f"{100 * r['pixel_share']:.2f}",
            str(r["components"]),
            f"{100 * r['crop_share_random']:.2f}",
            f"{100 * r['crop_share_centroid']:.2f}",
            f"{100 * r['crop_presence_random']:.1f}",
            f"{100 * r['crop_presence_centroid']:.1f}",
        )
    return table


def balance_plot(rows: list[dict], path, title: str):
    """Grouped bars per class: dataset pixel share, crop pixel share random vs centroid sampling (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    from csst_edge.fileio import atomic_write_bytes

    names = [r["class"] for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(rows) + 2), 4))
    for k, (key, label) in enumerate(
        (
            ("pixel_share", "dataset pixels"),
            ("crop_share_random", "crops, random"),
            ("crop_share_centroid", "crops, centroid sampling"),
        )
    ):
        ax.bar(x + (k - 1) * 0.27, [100 * max(r[key], 1e-4) for r in rows], 0.27, label=label)
    ax.set_yscale("log")
    ax.set_ylabel("share of pixels (%)")
    ax.set_xticks(x, names, rotation=45, ha="right")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path
