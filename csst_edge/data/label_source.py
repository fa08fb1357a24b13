"""Resolve "a set of label maps" from what a user names on the command line: a dataset YAML (or built-in name)
with a split, a `pseudo-label` output folder, or a plain folder of label PNGs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from csst_edge import storage
from csst_edge.errors import DatasetError


@dataclass
class LabelSet:
    name: str
    files: list[Path]
    luts: list[np.ndarray | None]
    class_names: list[str]
    ignore_index: int

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def resolve_label_set(
    source: str, split: str = "train", num_classes: int | None = None, ignore_index: int = 255
) -> LabelSet:
    remote = storage.is_remote(source)  # a URL: a pseudo-label folder in a bucket (its labels are cached locally)
    path = None if remote else storage.local_path(source)
    if (
        storage.isfile(storage.join(source, "meta.json"))
        if remote
        else path.is_dir() and (path / "meta.json").is_file()
    ):
        from csst_edge.data.pseudo_folder import read_pseudo_manifest

        pairs, meta = read_pseudo_manifest(source if remote else path)
        return LabelSet(
            storage.name_of(source),
            [p[2] for p in pairs],
            [None] * len(pairs),
            list(meta["class_names"]),
            int(meta.get("ignore_index", 255)),
        )
    if not remote and path.is_dir():
        files = sorted(p for p in path.rglob("*.png") if p.is_file())
        if not files:
            raise DatasetError(f"{path}: no label PNGs found")
        if num_classes is None:
            raise DatasetError(f"{path}: a plain label folder needs --num-classes (or pass a dataset YAML)")
        return LabelSet(path.name, files, [None] * len(files), [str(i) for i in range(num_classes)], ignore_index)
    from csst_edge.data.dataset import list_samples, load_dataset_config

    ds = load_dataset_config(source)
    samples = list_samples(ds, split)
    lut = ds.label_lut
    return LabelSet(
        f"{ds.name}_{split}", [s.label for s in samples], [lut] * len(samples), list(ds.class_names), ds.ignore_index
    )
