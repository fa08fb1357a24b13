"""Evaluation data: full-resolution (image, label, name) of a dataset split, no augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from csst_edge.data.dataset import DatasetConfig, list_samples, load_dataset_config
from csst_edge.data.imageio import read_image, read_label
from csst_edge.data.selection import SourceConfig, select
from csst_edge.data.transforms import normalize
from csst_edge.errors import DatasetError


class EvalDataset(Dataset):
    """Full-resolution (image, label, name) for evaluation: no augmentation, only normalisation."""

    def __init__(
        self,
        items: list[tuple[str, Path, Path]],
        lut: np.ndarray | None,
        mean,
        std,
        num_classes: int,
        ignore_index: int = 255,
    ):
        self.items, self.lut, self.mean, self.std = items, lut, mean, std
        self.num_classes, self.ignore_index = num_classes, ignore_index

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        name, image_path, label_path = self.items[i]
        image = read_image(image_path)
        label = read_label(label_path, self.lut, num_classes=self.num_classes, ignore_index=self.ignore_index)
        if label.shape != image.shape[:2]:
            raise DatasetError(f"{label_path}: label size {label.shape[::-1]} does not match image {image_path}")
        return torch.from_numpy(normalize(image, self.mean, self.std)), torch.from_numpy(label.astype(np.int64)), name


def collate_eval(batch):
    images, labels, names = zip(*batch, strict=False)
    return torch.stack(images), torch.stack(labels), list(names)


def eval_dataset(src: SourceConfig, mean, std) -> tuple[EvalDataset, DatasetConfig]:
    ds = load_dataset_config(src.data)
    items = [(s.name, s.image, s.label) for s in select(list_samples(ds, src.split), src)]
    return EvalDataset(items, ds.label_lut, mean, std, ds.num_classes, ds.ignore_index), ds
