"""Unlabelled inputs for pseudo-labelling: an image folder (recursive), a list file, or video files.

Everything is expanded up front into a flat list of `UnlabelledItem`s with stable names, so work can be
sharded across ranks, resumed (an item whose output exists is skipped), and decoded in DataLoader workers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from csst_edge.data.imageio import is_image_file, is_video_file, read_image
from csst_edge.errors import DatasetError


@dataclass(frozen=True)
class UnlabelledItem:
    name: str  # relative path without extension, e.g. "seq01/000123" or "drive/f000040"; names the outputs
    path: Path
    frame: int | None = None  # frame index inside a video file


def expand_sources(sources: list[str | os.PathLike], video_fps: float = 1.0) -> list[UnlabelledItem]:
    """Turn folders, list files (.txt: one path per line, relative to the list's folder), image files and
    video files into items. Video frames are taken at `video_fps` frames per second of video time."""
    items: list[UnlabelledItem] = []
    for source in sources:
        source = Path(source)
        if source.is_dir():
            items += _folder_items(source, video_fps)
        elif source.is_file() and source.suffix.lower() == ".txt":
            items += _list_items(source, video_fps)
        elif source.is_file() and is_video_file(source):
            items += video_items(source, video_fps)
        elif source.is_file() and is_image_file(source):
            items.append(UnlabelledItem(source.stem, source))
        elif not source.exists():
            raise DatasetError(f"{source}: unlabelled source not found")
        else:
            raise DatasetError(f"{source}: not an image folder, list file (.txt), image or video file")
    names = [i.name for i in items]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DatasetError(f"two unlabelled inputs map to the same output name '{dup}': give sources distinct names")
    if not items:
        raise DatasetError(f"no images or videos found in {', '.join(map(str, sources))}")
    return items


def _folder_items(folder: Path, video_fps: float) -> list[UnlabelledItem]:
    items = []
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.name.startswith("."):
            continue
        rel = p.relative_to(folder).with_suffix("")
        if is_image_file(p):
            items.append(UnlabelledItem(rel.as_posix(), p))
        elif is_video_file(p):
            items += video_items(p, video_fps, prefix=rel.as_posix())
    return items


def _list_items(list_file: Path, video_fps: float) -> list[UnlabelledItem]:
    items = []
    for n, line in enumerate(list_file.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line) if Path(line).is_absolute() else list_file.parent / line
        if not p.is_file():
            raise DatasetError(f"{list_file}:{n}: listed file {p} not found")
        if is_video_file(p):
            items += video_items(p, video_fps)
        else:
            items.append(UnlabelledItem(Path(line).with_suffix("").as_posix().lstrip("/"), p))
    return items


def video_items(path: Path, video_fps: float = 1.0, prefix: str | None = None) -> list[UnlabelledItem]:
    """One item every 1/video_fps seconds of the video (every frame when video_fps >= the video's fps)."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DatasetError(f"{path}: cannot open video")
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    cap.release()
    if count <= 0:
        raise DatasetError(f"{path}: video has no frames")
    step = max(1.0, fps / video_fps) if video_fps > 0 else 1.0
    frames = sorted({int(round(i * step)) for i in range(int(np.ceil(count / step)))} & set(range(count)))
    prefix = prefix or path.stem
    return [UnlabelledItem(f"{prefix}/f{f:06d}", path, f) for f in frames]


def load_item(item: UnlabelledItem) -> np.ndarray:
    """Decode one item to RGB uint8 (seeks inside videos; DataLoader workers each open their own capture)."""
    if item.frame is None:
        return read_image(item.path)
    cap = cv2.VideoCapture(str(item.path))
    try:
        cap.set(cv2.CAP_PROP_POS_FRAMES, item.frame)
        ok, frame = cap.read()
    finally:
        cap.release()
    if not ok or frame is None:
        raise DatasetError(f"{item.path}: cannot decode frame {item.frame}")
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
