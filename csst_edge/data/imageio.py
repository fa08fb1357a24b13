"""Reading images and label maps with errors that name the file.

Images are returned as RGB uint8 HxWx3, label maps as uint8 HxW class ids (255 = ignore).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from csst_edge.errors import DatasetError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to RGB uint8. Raises DatasetError for a missing, empty or corrupt file."""
    path = Path(path)
    data = _read_bytes(path)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"{path}: not a readable image (corrupt or unsupported format)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_label(path: str | os.PathLike, lut: np.ndarray | None = None) -> np.ndarray:
    """Decode a single-channel label PNG to uint8 class ids, optionally remapped through a 256-entry LUT."""
    path = Path(path)
    data = _read_bytes(path)
    label = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if label is None:
        raise DatasetError(f"{path}: not a readable label image (corrupt or unsupported format)")
    if label.ndim == 3:
        raise DatasetError(f"{path}: label must be a single-channel image of class ids, got {label.shape[2]} channels")
    if label.dtype != np.uint8:
        if label.max(initial=0) > 255:
            raise DatasetError(f"{path}: label ids above 255 are not supported (found {int(label.max())})")
        label = label.astype(np.uint8)
    if lut is not None:
        label = lut[label]
    return label


def _read_bytes(path: Path) -> bytes:
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
