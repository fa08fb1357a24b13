"""Atomic file writes: a reader (or a killed writer) never sees a half-written file.

Write to a temporary file in the same directory, fsync it, then `os.replace` it over the target,
which is atomic on POSIX filesystems.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import struct
import tempfile
from collections import Counter
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
    """Append one JSON line and fsync, so a crash loses at most the line being written. A last line left without
    its newline (a run that died mid-append) is ended first, so this line is never glued onto the torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, separators=(",", ":")) + "\n"
    with open(path, "ab") as f:
        if f.tell() > 0 and not _ends_with_newline(path):
            line = "\n" + line
        f.write(line.encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def read_jsonl(path: str | os.PathLike, skipped: Counter | None = None) -> list[dict]:
    """Read a JSONL file; a line that is not a JSON object (torn by a crash, garbage) is skipped and counted in
    `skipped["bad line"]`, never the end of the file (the records after it are read too)."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, encoding="utf-8", errors="replace") as f:
        return parse_jsonl_lines(f, skipped, where=str(path))


def parse_jsonl_lines(lines, skipped: Counter | None = None, where: str | None = None) -> list[dict]:
    """The JSON objects of JSONL lines. A line that does not parse, or is not an object, is skipped (counted in
    `skipped["bad line"]`, and with `where` one warning line names the file and the count)."""
    records, bad = [], 0
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            bad += 1
    if bad:
        if skipped is not None:
            skipped["bad line"] += bad
        if where is not None:
            warn(f"{where}: skipped {bad} line(s) that are not JSON objects (torn by a crash, or not written by us)")
    return records


def warn(message: str) -> None:
    """One warning line on stderr (the `csst_edge` logger): something in the data was skipped, not followed."""
    logging.getLogger("csst_edge").warning("warning: %s", message)


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


class WriterLock:
    """One writer per folder: an exclusive `flock` on `path`, which the kernel releases when the holder dies (so a
    lock is never stale), with the holder's pid, host and start time written in it for the error a second writer
    gets: `error(message)` is raised, naming `what` and the holder."""

    def __init__(self, path: str | os.PathLike, what: str, error: type[Exception]):
        import socket
        import time

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release()
        try:
            import fcntl

            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # not POSIX: no lock
            pass
        except OSError:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            raise error(
                f"{what} is being written by {holder} (lock {self.path}); wait for it or use another folder"
            ) from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        self._file.flush()

    def release(self) -> None:
        if not self._file.closed:
            self._file.close()  # closing drops the flock

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


# ------------------------------------------------------------------------------------------ image headers
DEFAULT_MAX_PIXELS = 50_000_000
MAX_PIXELS_ENV = "CSST_MAX_PIXELS"


class ImageTooLargeError(ValueError):
    """An image whose header declares more pixels than the limit (it is not decoded)."""


def max_pixels() -> int:
    """The pixel limit for decoding an image: $CSST_MAX_PIXELS (a number, e.g. 80000000 or 80e6), else 50 MP.
    0 or a negative value turns the limit off."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        return int(float(text))
    except ValueError:
        raise ValueError(f"${MAX_PIXELS_ENV}={text!r} is not a number of pixels (e.g. 50000000)") from None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) an encoded image declares in its header, read without decoding it (PNG, JPEG, BMP, GIF,
    WebP, TIFF, PNM); None when the header is not one of these or is cut short."""
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            w, h = struct.unpack(">II", data[16:24])
            return h, w
        if data[:2] == b"\xff\xd8":
            return _jpeg_size(data)
        if data[:2] == b"BM" and len(data) >= 26:
            header = struct.unpack("<I", data[14:18])[0]
            if header == 12:  # OS/2 BITMAPCOREHEADER
                w, h = struct.unpack("<HH", data[18:22])
            else:
                w, h = struct.unpack("<ii", data[18:26])
            return abs(h), abs(w)
        if data[:6] in (b"GIF87a", b"GIF89a"):
            w, h = struct.unpack("<HH", data[6:10])
            return h, w
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _webp_size(data)
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff_size(data)
        if data[:1] == b"P" and data[1:2] in b"123456" and len(data) > 2:
            return _pnm_size(data)
    except (struct.error, IndexError, ValueError):
        return None
    return None


def check_image_pixels(data: bytes, where: str) -> tuple[int, int]:
    """The (height, width) of an encoded image from its header; `ImageTooLargeError` (naming `where`, the size and
    the limit) when it has more pixels than `max_pixels()`, `ValueError` when the header is not a known image
    format. Call it before decoding: a 1 MB PNG may declare 30000x30000 pixels (several GB once decoded)."""
    size = image_size(data)
    if size is None:
        raise ValueError(f"{where}: not a readable image (unknown or corrupt header; not decoded)")
    limit = max_pixels()
    h, w = size
    if h <= 0 or w <= 0:
        raise ValueError(f"{where}: not a readable image (its header declares {w}x{h} pixels)")
    if limit > 0 and h * w > limit:
        raise ImageTooLargeError(
            f"{where}: {w}x{h} pixels ({h * w / 1e6:.0f} MP) is over the limit of {limit / 1e6:g} MP, not decoded "
            f"(raise it with ${MAX_PIXELS_ENV})"
        )
    return size


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i, n = 2, len(data)
    while i < n:
        if data[i] != 0xFF:
            return None
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            return None
        marker = data[i]
        i += 1
        if marker in (0x01, *range(0xD0, 0xD9)):  # standalone markers: no length
            continue
        if marker == 0xD9:  # end of image before a frame header
            return None
        length = struct.unpack(">H", data[i : i + 2])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn
            h, w = struct.unpack(">HH", data[i + 3 : i + 7])
            return h, w
        if length < 2:
            return None
        i += length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 ":
        if data[23:26] != b"\x9d\x01\x2a":
            return None
        w, h = struct.unpack("<HH", data[26:30])
        return h & 0x3FFF, w & 0x3FFF
    if chunk == b"VP8L":
        if data[20] != 0x2F:
            return None
        bits = int.from_bytes(data[21:25], "little")
        return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
    if chunk == b"VP8X":
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return h, w
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    order = "<" if data[:2] == b"II" else ">"
    offset = struct.unpack(order + "I", data[4:8])[0]
    count = struct.unpack(order + "H", data[offset : offset + 2])[0]
    size: dict[int, int] = {}
    for k in range(count):
        at = offset + 2 + 12 * k
        tag, kind = struct.unpack(order + "HH", data[at : at + 4])
        if tag in (256, 257):
            fmt = {3: "H", 4: "I"}.get(kind)
            if fmt is None:
                return None
            size[tag] = struct.unpack(order + fmt, data[at + 8 : at + 8 + struct.calcsize(fmt)])[0]
    if 256 not in size or 257 not in size:
        return None
    return size[257], size[256]


def _pnm_size(data: bytes) -> tuple[int, int] | None:
    fields: list[int] = []
    text = data[2:512].decode("ascii", "replace")
    for line in text.splitlines():
        for word in line.split("#", 1)[0].split():
            if not word.isdigit():
                return None
            fields.append(int(word))
            if len(fields) == 2:
                return fields[1], fields[0]
    return None
