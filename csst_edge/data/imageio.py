"""Reading images and label maps with errors that name the file.

Images are returned as RGB uint8 HxWx3, label maps as uint8 HxW class ids (255 = ignore). A path may also be an
fsspec URL (s3://, gs://, file://): the bytes come through csst_edge.storage and are decoded the same way.

Every image is checked from its header before it is decoded (`fileio.check_image_pixels`): one that declares more
pixels than $CSST_MAX_PIXELS (default 50 MP) is a DatasetError naming it, and nothing is decoded (a 1 MB PNG can
declare 30000x30000 pixels, several GB once decoded).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from csst_edge import storage
from csst_edge.errors import DatasetError
from csst_edge.fileio import check_image_pixels

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to RGB uint8. Raises DatasetError for a missing, empty or corrupt file."""
    path = storage.as_location(path)
    data = _read_bytes(path)
    _check_header(data, path)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"{storage.redact(path)}: not a readable image (corrupt or unsupported format)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_label(
    path: str | os.PathLike, lut: np.ndarray | None = None, *, num_classes: int | None = None, ignore_index: int = 255
) -> np.ndarray:
    """Decode a single-channel label PNG to uint8 class ids, optionally remapped through a 256-entry LUT.

    With `num_classes`, the remapped ids are checked (`check_label_ids`): every reader that trains, evaluates or
    indexes on a label map passes it, so an id that is neither a class nor `ignore_index` is one clear error.
    """
    path = storage.as_location(path)
    data = _read_bytes(path)
    _check_header(data, path)
    label = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    where = storage.redact(path)
    if label is None:
        raise DatasetError(f"{where}: not a readable label image (corrupt or unsupported format)")
    if label.ndim == 3:
        raise DatasetError(f"{where}: label must be a single-channel image of class ids, got {label.shape[2]} channels")
    if label.dtype != np.uint8:
        if label.max(initial=0) > 255:
            raise DatasetError(f"{where}: label ids above 255 are not supported (found {int(label.max())})")
        label = label.astype(np.uint8)
    if lut is not None:
        label = lut[label]
    if num_classes is not None:
        check_label_ids(label, num_classes, ignore_index, where)
    return label


def _check_header(data: bytes, path) -> None:
    """The pixel limit, from the header alone; a DatasetError naming the file (credentials redacted)."""
    try:
        check_image_pixels(data, storage.redact(path))
    except ValueError as e:
        raise DatasetError(str(e)) from None


def check_label_ids(label: np.ndarray, num_classes: int, ignore_index: int, path: str | os.PathLike) -> None:
    """Raise DatasetError when a uint8 label map (after the id remap) holds ids that are neither a class
    (0..num_classes-1) nor `ignore_index`. The message names the file, the ids and the way out (id_remap)."""
    if label.size == 0 or int(label.max()) < num_classes:  # the common case: one vectorised pass, no allocation
        return
    allowed = np.zeros(256, bool)
    allowed[: min(num_classes, 256)] = True
    if 0 <= ignore_index < 256:
        allowed[ignore_index] = True
    counts = np.bincount(label.ravel(), minlength=256)
    bad = np.flatnonzero((counts > 0) & ~allowed)
    if not bad.size:
        return
    ids = ", ".join(str(i) for i in bad[:10].tolist()) + (f" and {bad.size - 10} more" if bad.size > 10 else "")
    n = int(counts[bad].sum())
    pixels = f"{n} pixel" + ("s" if n != 1 else "")
    raise DatasetError(
        f"{storage.redact(path)}: class id(s) {ids} out of range ({pixels}): neither a class (the dataset has "
        f"{num_classes} classes, ids 0-{num_classes - 1}) nor the ignore id {ignore_index}; map them with id_remap in "
        f"the dataset YAML, e.g. `id_remap: {{{int(bad[0])}: {ignore_index}}}` to ignore them"
    )


def _read_bytes(path: Path | str) -> bytes:
    if isinstance(path, str):  # a remote URL
        data = storage.read_bytes(path)  # StorageError: names the (redacted) URL
        if not data:
            raise DatasetError(f"{storage.redact(path)}: file is empty")
        return data
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found") from None
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e.strerror})") from None
    if not data:
        raise DatasetError(f"{path}: file is empty")
    return data


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def is_video_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS
