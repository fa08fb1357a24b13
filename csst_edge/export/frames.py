"""Frames for verification, calibration and evaluation of exported models: from a dataset or synthetic.

Everything is uint8 RGB H x W x 3, the format the exported graph takes. Datasets are read lazily (a generator)
so evaluating on a large split never holds it in memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np


def synthetic_frames(n: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth colour fields with texture, closer to real images than white noise (activations of a plausible
    range, large uniform regions, edges) so the PyTorch/ORT comparison is not dominated by noise."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        coarse = rng.integers(0, 256, size=(max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
        base = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.int16)
        noise = rng.integers(-12, 13, size=(height, width, 3), dtype=np.int16)
        frames.append(np.clip(base + noise, 0, 255).astype(np.uint8))
    return frames


def resize_frame(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    shrink = height < image.shape[0] and width < image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def resize_label(label: np.ndarray, height: int, width: int) -> np.ndarray:
    if label.shape[:2] == (height, width):
        return label
    return cv2.resize(label, (width, height), interpolation=cv2.INTER_NEAREST)


def iter_dataset(
    data: str | os.PathLike, split: str = "val", limit: int | None = None
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(name, RGB image, label ids after the dataset's remap) for each sample of a split, sorted by name."""
    from csst_edge.data.dataset import list_samples, load_dataset_config
    from csst_edge.data.imageio import read_image, read_label

    ds = load_dataset_config(data)
    lut = ds.label_lut
    samples = list_samples(ds, split)
    for sample in samples[:limit] if limit else samples:
        yield (
            sample.name,
            read_image(sample.image),
            read_label(sample.label, lut, num_classes=ds.num_classes, ignore_index=ds.ignore_index),
        )


def dataset_info(data: str | os.PathLike):
    from csst_edge.data.dataset import load_dataset_config

    return load_dataset_config(data)


def count_samples(data: str | os.PathLike, split: str = "val", limit: int | None = None) -> int:
    from csst_edge.data.dataset import list_samples, load_dataset_config

    n = len(list_samples(load_dataset_config(data), split))
    return min(n, limit) if limit else n


def load_frames(
    source: str | os.PathLike | list | None, count: int, height: int, width: int, split: str = "val", seed: int = 0
) -> list[np.ndarray]:
    """`count` frames at height x width from a dataset YAML (its `split`), an image folder, a list of image
    paths / arrays, or synthetic ones when `source` is None."""
    from csst_edge.data.imageio import IMAGE_EXTENSIONS, read_image

    if source is None:
        return synthetic_frames(count, height, width, seed)
    if isinstance(source, (list, tuple)):
        images = [np.asarray(s) if isinstance(s, np.ndarray) else read_image(s) for s in source[:count]]
    else:
        path = Path(source)
        if path.suffix.lower() in (".yaml", ".yml") or not path.exists():  # a YAML or a built-in dataset name
            images = [image for _, image, _ in iter_dataset(path, split, count)]
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)[:count]
            images = [read_image(p) for p in files]
        else:
            images = [read_image(path)]
    return [resize_frame(im, height, width) for im in images]
