"""Training data: sources (labelled datasets and pseudo-label folders) → entries → per-epoch batch plans.

An epoch is planned up front as a list of batches of `SampleRef`s (entry, anchor y/x, per-sample seed).
Planning in the main process, not in workers, keeps it deterministic given (seed, epoch) and lets it
be sharded across DDP ranks and mixed between real and pseudo labels batch by batch. The plan reaches the
DataLoader's workers through `EpochBatches`, one `EpochItem` (the ref plus its epoch's crop) per sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from csst_edge.data.dataset import DatasetConfig, list_samples, load_dataset_config
from csst_edge.data.imageio import read_image, read_label
from csst_edge.data.pseudo_folder import read_pseudo_manifest
from csst_edge.data.selection import SourceConfig, select
from csst_edge.data.transforms import Compose, normalize
from csst_edge.errors import ConfigError, DatasetError
from csst_edge.train.config import TrainConfig


@dataclass(frozen=True)
class TrainEntry:
    name: str
    image: Path
    label: Path
    group: str  # "real" or "pseudo"
    lut_id: int  # index into TrainSet.luts (None-able LUTs can't be hashed into a frozen dataclass cheaply)
    soft: Path | None = None  # top-k soft label (.npz) of a pseudo entry


@dataclass
class TrainSet:
    entries: list[TrainEntry]
    luts: list[np.ndarray | None]
    class_names: list[str]
    palette: list[tuple[int, int, int]]
    ignore_index: int

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def group_ids(self, group: str) -> np.ndarray:
        return np.array([i for i, e in enumerate(self.entries) if e.group == group], dtype=np.int64)


def build_train_set(sources: list[SourceConfig]) -> TrainSet:
    """Resolve every source into entries. All sources must share the class list of the first one."""
    if not sources:
        raise ConfigError("config key 'train' is empty: name at least one source (data: DATASET.yaml)")
    entries: list[TrainEntry] = []
    luts: list[np.ndarray | None] = []
    classes = palette = ignore = None
    for i, src in enumerate(sources):
        if src.data is not None:
            ds: DatasetConfig = load_dataset_config(src.data)
            names, pal, ign, lut = ds.class_names, ds.palette, ds.ignore_index, ds.label_lut
            items = [(s.name, s.image, s.label, None) for s in select(list_samples(ds, src.split), src)]
            group = "real"
        else:
            pairs, meta = read_pseudo_manifest(src.pseudo)  # a URL folder: local cached copies
            names, pal, ign, lut = meta["class_names"], meta["palette"], meta.get("ignore_index", 255), None
            items = select(pairs, src)
            group = "pseudo"
        if classes is None:
            classes, palette, ignore = list(names), [tuple(c) for c in pal], int(ign)
        elif list(names) != classes:
            raise ConfigError(
                f"config key 'train.{i}': its classes differ from train.0's ({len(names)} vs {len(classes)})"
            )
        if not items:
            raise ConfigError(f"config key 'train.{i}': selects no samples")
        luts.append(lut)
        entries += [TrainEntry(n, Path(img), Path(lab), group, len(luts) - 1, soft) for n, img, lab, soft in items]
    return TrainSet(entries, luts, classes, palette, ignore)


# ---------------------------------------------------------------------------------------------- planning
@dataclass(frozen=True)
class SampleRef:
    entry: int
    y: int  # anchor (centroid) in label coordinates, -1 for a plain random crop
    x: int
    seed: int


def sampling_groups(
    train_set: TrainSet, real_fraction: float | None, real_only_tail: float = 0.0
) -> dict[str, np.ndarray]:
    """Entry ids per sampling group: real and pseudo apart when a fixed real share is asked for, else one group
    ("all"); a real-only tail adds the real group beside "all" (its epochs draw from the real labels alone)."""
    real, pseudo = train_set.group_ids("real"), train_set.group_ids("pseudo")
    if not len(real) or not len(pseudo):
        return {"all": np.arange(len(train_set.entries))}
    if real_fraction is not None:
        return {"real": real, "pseudo": pseudo}
    groups = {"all": np.arange(len(train_set.entries))}
    if real_only_tail > 0:
        groups["real"] = real
    return groups


def first_real_only_epoch(epochs: int, real_only_tail: float) -> int:
    """The first epoch of the real-only tail (`epochs` when there is none): the last round(tail * epochs) epochs,
    at least one when the tail is asked for at all."""
    if real_only_tail <= 0:
        return epochs
    return epochs - min(epochs - 1, max(1, round(real_only_tail * epochs)))


class EpochPlanner:
    """Plans each epoch's batches. With centroid sampling each group (real / pseudo, or all entries together
    when `real_fraction` is None) draws class-uniform centroids from its own index; otherwise random images.
    `real_fraction` fixes the real share inside every batch, not just on average; the epochs of the
    `real_only_tail` take every sample from the real group."""

    def __init__(self, train_set: TrainSet, cfg: TrainConfig, indexes: dict | None = None):
        self.train_set, self.cfg = train_set, cfg
        self.samples_per_epoch = cfg.samples_per_epoch or len(train_set.entries)
        self.groups = sampling_groups(train_set, cfg.real_fraction, cfg.real_only_tail)
        if "pseudo" in self.groups:
            self.fractions = {"real": cfg.real_fraction, "pseudo": 1.0 - cfg.real_fraction}
        else:
            self.fractions = {"all": 1.0}
        self.tail_start = first_real_only_epoch(cfg.epochs, cfg.real_only_tail) if "real" in self.groups else None
        self.samplers = {}
        if cfg.sampling == "centroid":
            from csst_edge.data.sampler import CentroidSampler

            for g in self.groups:
                self.samplers[g] = CentroidSampler(
                    indexes[g],
                    num_samples=self.samples_per_epoch,
                    class_uniform_fraction=cfg.class_uniform_fraction,
                    seed=cfg.seed + (1000 if g == "pseudo" else 0),
                )

    def iterations(self, batch_size: int) -> int:
        return math.ceil(self.samples_per_epoch / batch_size)

    def real_only(self, epoch: int) -> bool:
        return self.tail_start is not None and epoch >= self.tail_start

    def plan(self, epoch: int, batch_size: int) -> list[list[SampleRef]]:
        n_batches = self.iterations(batch_size)
        per_batch = self._per_batch_counts(batch_size, epoch)
        rng = np.random.default_rng([self.cfg.seed, epoch, 7])
        drawn = {g: self._draw(g, epoch, n_batches * k, rng) for g, k in per_batch.items()}
        batches, cursor = [], {g: 0 for g in per_batch}
        for _b in range(n_batches):
            batch = []
            for g, k in per_batch.items():
                batch += drawn[g][cursor[g] : cursor[g] + k]
                cursor[g] += k
            rng.shuffle(batch)
            batches.append(batch)
        # the last batch is trimmed so an epoch has exactly samples_per_epoch samples
        excess = n_batches * batch_size - self.samples_per_epoch
        if excess:
            batches[-1] = batches[-1][: batch_size - excess]
        seeds = iter(rng.integers(0, 2**31 - 1, size=self.samples_per_epoch).tolist())
        return [[SampleRef(e, y, x, next(seeds)) for e, y, x in batch] for batch in batches]

    def _per_batch_counts(self, batch_size: int, epoch: int) -> dict[str, int]:
        if self.real_only(epoch):
            return {"real": batch_size}
        if "all" in self.fractions:
            return {"all": batch_size}
        k_real = min(batch_size, max(0, round(batch_size * self.fractions["real"])))
        return {"real": k_real, "pseudo": batch_size - k_real}

    def _draw(self, group: str, epoch: int, count: int, rng: np.random.Generator) -> list[tuple[int, int, int]]:
        ids = self.groups[group]
        if count == 0:
            return []
        if group in self.samplers:
            sampler = self.samplers[group]
            refs = []
            while len(refs) < count:  # an epoch of the sampler holds samples_per_epoch; draw more if needed
                for r in sampler.sample_epoch(epoch * 1000 + len(refs) // max(1, self.samples_per_epoch)):
                    refs.append((int(ids[r.image_id]), int(r.y), int(r.x)))
            return refs[:count]
        reps = math.ceil(count / len(ids))
        order = np.concatenate([rng.permutation(ids) for _ in range(reps)])[:count]
        return [(int(e), -1, -1) for e in order]


def shard_batches(batches: list[list[SampleRef]], rank: int, world_size: int) -> list[list[SampleRef]]:
    """Every rank takes its slice of every global batch, so all ranks run the same number of steps."""
    if world_size == 1:
        return batches
    out = []
    for batch in batches:
        per = math.ceil(len(batch) / world_size)
        part = batch[rank * per : (rank + 1) * per]
        out.append(part or batch[-1:])  # a too-short final batch still gives every rank one sample
    return out


@dataclass(frozen=True)
class EpochItem:
    """One DataLoader index: a planned sample plus what its epoch decides, the crop size (the crop schedule) and,
    for method consistency, the refreshed label file that replaces the entry's own."""

    ref: SampleRef
    crop: tuple[int, int]
    label: Path | None = None


class EpochBatches(Sampler):
    """The batch sampler of the one training DataLoader a run keeps: it yields the current epoch's batches.

    A DataLoader's workers get the dataset once, when they start. What changes from epoch to epoch (the
    planned samples, the crop and batch size of the crop schedule, refreshed labels) travels with the indices
    instead, so the workers live for the whole run (`persistent_workers`) rather than being started again,
    each a fork of the whole training process, at every epoch."""

    def __init__(self):
        self.batches: list[list[EpochItem]] = []

    def set_epoch(
        self, batches: list[list[SampleRef]], crop: tuple[int, int], labels: dict[int, Path] | None = None
    ) -> None:
        labels = labels or {}
        self.batches = [[EpochItem(ref, tuple(crop), labels.get(ref.entry)) for ref in batch] for batch in batches]

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class TrainDataset(Dataset):
    """Decodes one EpochItem: read image + label, transform at the item's crop with the centroid as anchor,
    normalise. `transforms(crop)` builds the augmentation pipeline for a crop size (built once per size).

    With `soft_k` > 0 (the soft-label ablation) it also returns top-k ids [K,H,W] and probabilities [K,H,W]:
    pseudo entries from their .npz, real entries as a one-hot top-1. They travel through the transforms as
    extra label channels so they get exactly the same geometry.
    """

    def __init__(self, train_set: TrainSet, transforms: Callable[[tuple[int, int]], Compose], mean, std, soft_k=0):
        self.train_set, self.transforms, self.mean, self.std = train_set, transforms, mean, std
        self.soft_k = soft_k
        self._by_crop: dict[tuple[int, int], Compose] = {}

    def __len__(self) -> int:
        return len(self.train_set.entries)

    def __getitem__(self, item: EpochItem):
        ref = item.ref
        entry = self.train_set.entries[ref.entry]
        image = read_image(entry.image)
        label = read_label(
            item.label or entry.label,
            self.train_set.luts[entry.lut_id],
            num_classes=self.train_set.num_classes,
            ignore_index=self.train_set.ignore_index,
        )
        if label.shape != image.shape[:2]:
            raise DatasetError(f"{entry.label}: label size {label.shape[::-1]} does not match image {entry.image}")
        if item.crop not in self._by_crop:
            self._by_crop[item.crop] = self.transforms(item.crop)
        transform = self._by_crop[item.crop]
        anchor = (ref.y, ref.x) if ref.y >= 0 else None
        rng = np.random.default_rng(ref.seed)
        x = lambda img: torch.from_numpy(normalize(img, self.mean, self.std))  # noqa: E731
        if not self.soft_k:
            image, label, _ = transform(image, label, anchor, rng)
            return x(image), torch.from_numpy(label.astype(np.int64))
        stacked = np.concatenate([label[..., None], self._soft_channels(entry, label)], axis=-1)
        image, stacked, _ = transform(image, stacked, anchor, rng)
        k = self.soft_k
        ids = torch.from_numpy(stacked[..., 1 : 1 + k].transpose(2, 0, 1).astype(np.int64))
        probs = torch.from_numpy(stacked[..., 1 + k :].transpose(2, 0, 1).astype(np.float32) / 255.0)
        return x(image), torch.from_numpy(stacked[..., 0].astype(np.int64)), ids, probs

    def _soft_channels(self, entry: TrainEntry, label: np.ndarray) -> np.ndarray:
        k, ignore = self.soft_k, self.train_set.ignore_index
        if entry.soft is not None:
            with np.load(entry.soft) as z:
                ids, probs = z["ids"][:k], z["probs"][:k]
            if ids.shape[0] < k or ids.shape[1:] != label.shape:
                raise DatasetError(f"{entry.soft}: soft label has shape {ids.shape}, expected ({k}, *{label.shape})")
        else:
            ids = np.zeros((k,) + label.shape, np.uint8)
            probs = np.zeros_like(ids)
            valid = label != ignore
            ids[0][valid] = label[valid]
            probs[0][valid] = 255
        return np.concatenate([ids, probs]).transpose(1, 2, 0)

    @staticmethod
    def soft_fill(k: int, ignore_index: int) -> tuple[int, ...]:
        """Padding per channel: label → ignore, ids → 0, probabilities → 0 (a pixel with no mass is ignored)."""
        return (ignore_index,) + (0,) * (2 * k)
