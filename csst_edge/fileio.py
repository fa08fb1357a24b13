"""Atomic file writes: a reader (or a killed writer) never sees a half-written file.

Write to a temporary file in the same directory, fsync it, then `os.replace` it over the target,
which is atomic on POSIX filesystems.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import cv2
import numpy as np


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temp file next to `path`; on clean exit fsync and rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_write_image(path: str | os.PathLike, image: np.ndarray, params: list[int] | None = None) -> None:
    """Encode `image` (RGB HxWx3 or single-channel HxW uint8) by the file's extension and write it atomically."""
    path = Path(path)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(path.suffix, image, params or [])
    if not ok:
        raise ValueError(f"could not encode image for {path}")
    atomic_write_bytes(path, buf.tobytes())


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line and fsync, so a crash loses at most the line being written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, separators=(",", ":")) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL file, ignoring a torn last line left by a crash."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as f:
        return parse_jsonl_lines(f)


def parse_jsonl_lines(lines) -> list[dict]:
    """The records of JSONL lines up to the first line that does not parse (a torn last line left by a crash)."""
    records = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def file_sha256(path: str | os.PathLike, length: int = 16) -> str:
    """Short content hash of a file (used to tie outputs to the checkpoint that made them)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


def read_yaml_mapping(path: str | os.PathLike, error: type[Exception], what: str) -> dict:
    """A YAML file that must hold a mapping; `error` (naming the file) for invalid YAML or another top level."""
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise error(f"{path}: expected a mapping of {what} keys")
    return raw
