"""Unlabelled inputs for pseudo-labelling: an image folder (recursive), a list file, or video files.

Everything is expanded up front into a flat list of `UnlabelledItem`s with stable names, so work can be
sharded across ranks, resumed (an item whose output exists is skipped), and decoded in DataLoader workers.

Any source may be an fsspec URL (s3://bucket/fleet/car1/harvest, gs://..., file://...): a URL folder is listed
recursively, a URL list file may name URLs or paths relative to its own folder, and a URL item keeps its URL as
`path` (images are read through csst_edge.storage; videos are fetched once into the local cache to be decoded).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from csst_edge import storage
from csst_edge.data.imageio import is_image_file, is_video_file, read_image
from csst_edge.errors import DatasetError
from csst_edge.fileio import warn


@dataclass(frozen=True)
class UnlabelledItem:
    name: str  # relative path without extension, e.g. "seq01/000123" or "drive/f000040"; names the outputs
    path: Path | str  # a local path, or the URL of a remote file
    frame: int | None = None  # frame index inside a video file


def expand_sources(sources: list[str | os.PathLike], video_fps: float = 1.0) -> list[UnlabelledItem]:
    """Turn folders, list files (.txt: one path per line, relative to the list's folder), image files and
    video files into items. Video frames are taken at `video_fps` frames per second of video time."""
    items: list[UnlabelledItem] = []
    for source in sources:
        if storage.is_remote(source):
            items += _remote_items(str(source).rstrip("/"), video_fps)
            continue
        source = storage.local_path(source)
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
        raise DatasetError(f"no images or videos found in {', '.join(storage.redact(x) for x in sources)}")
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


def _remote_items(url: str, video_fps: float) -> list[UnlabelledItem]:
    """A URL source: a folder (prefix) listed recursively, a list file, an image or a video."""
    if storage.isdir(url):
        items = []
        for file in storage.find(url):
            rel = storage.relative_to(file, url)
            if storage.safe_relative(rel) is None:  # a key such as a/../../b (object stores keep them as written)
                warn(f"{storage.redact(url)}: skipped the key {rel!r} (it would name outputs outside --out)")
                continue
            if any(part.startswith(".") for part in rel.split("/")):
                continue
            stem = Path(rel).with_suffix("").as_posix()
            if is_image_file(rel):
                items.append(UnlabelledItem(stem, file))
            elif is_video_file(rel):
                items += video_items(file, video_fps, prefix=stem)
        return items
    if not storage.isfile(url):
        raise DatasetError(f"{storage.redact(url)}: unlabelled source not found")
    if url.lower().endswith(".txt"):
        return _list_items(url, video_fps)
    if is_video_file(url):
        return video_items(url, video_fps)
    if is_image_file(url):
        return [UnlabelledItem(Path(storage.name_of(url)).stem, url)]
    raise DatasetError(f"{storage.redact(url)}: not an image folder, list file (.txt), image or video file")


def _list_items(list_file: Path | str, video_fps: float) -> list[UnlabelledItem]:
    """One path or URL per line; relative paths are relative to the list's folder (a URL folder too)."""
    items = []
    where = storage.redact(list_file)
    for n, line in enumerate(storage.read_text(list_file).splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if storage.is_remote(line):
            p, name = line, output_name(Path(line.split("://", 1)[1]).with_suffix("").as_posix())
        else:
            local = storage.local_path(line)
            p = local if local.is_absolute() else storage.join(storage.parent_of(list_file), line)
            name = output_name(Path(line).with_suffix("").as_posix())
        # local files are checked here; a missing remote one (no request per line) is reported when it is read
        if isinstance(p, Path) and not p.is_file():
            raise DatasetError(f"{where}:{n}: listed file {p} not found")
        if is_video_file(str(p)):
            items += video_items(p, video_fps)
        else:
            items.append(UnlabelledItem(name, p))
    return items


def output_name(text: str) -> str:
    """A listed path as the name of its outputs, always inside the output folder: '..' segments become '__',
    '.' and empty segments go (`../../in/good` -> `__/__/in/good`), so distinct lines keep distinct names."""
    parts = [("__" if part == ".." else part) for part in text.replace("\\", "/").split("/") if part not in ("", ".")]
    return "/".join(parts) or "_"


def video_items(path: Path | str, video_fps: float = 1.0, prefix: str | None = None) -> list[UnlabelledItem]:
    """One item every 1/video_fps seconds of the video (every frame when video_fps >= the video's fps)."""
    cap = cv2.VideoCapture(str(_local_video(path)))
    if not cap.isOpened():
        raise DatasetError(f"{storage.redact(path)}: cannot open video")
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    cap.release()
    if count <= 0:
        raise DatasetError(f"{storage.redact(path)}: video has no frames")
    step = max(1.0, fps / video_fps) if video_fps > 0 else 1.0
    frames = sorted({int(round(i * step)) for i in range(int(np.ceil(count / step)))} & set(range(count)))
    prefix = prefix or Path(storage.name_of(path)).stem
    return [UnlabelledItem(f"{prefix}/f{f:06d}", path, f) for f in frames]


def load_item(item: UnlabelledItem) -> np.ndarray:
    """Decode one item to RGB uint8 (seeks inside videos; DataLoader workers each open their own capture)."""
    if item.frame is None:
        return read_image(item.path)
    cap = cv2.VideoCapture(str(_local_video(item.path)))
    try:
        cap.set(cv2.CAP_PROP_POS_FRAMES, item.frame)
        ok, frame = cap.read()
    finally:
        cap.release()
    if not ok or frame is None:
        raise DatasetError(f"{storage.redact(item.path)}: cannot decode frame {item.frame}")
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def _local_video(path: Path | str) -> Path:
    """OpenCV decodes local files only: a remote video is fetched once into the local cache."""
    return storage.cache_files([path])[0]
