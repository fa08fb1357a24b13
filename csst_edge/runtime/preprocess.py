"""Frame geometry between the camera and the model: resize or letterbox a frame to the model's input size, and
map the model's output (labels, probabilities) back to the frame.

    fit = fit_frame(frame, 512, 1024, mode="letterbox")
    out = backend.infer(fit.image)
    labels = labels_to_frame(labels_at_model_size, fit)      # H x W of the original frame

`resize` stretches (the training crops were never letterboxed, and a dashcam's aspect ratio usually matches the
export size); `letterbox` keeps the aspect ratio and pads with grey, for cameras whose aspect differs from the
export (a 4:3 CSI sensor feeding a 2:1 model), so objects keep the shape the model was trained on.
Torch-free: OpenCV and numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from csst_edge.errors import CsstError

FIT_MODES = ("resize", "letterbox")
PAD_VALUE = 114  # mid grey: the least surprising value for a model normalised around the dataset mean


class PreprocessError(CsstError):
    """A frame cannot be fitted to the model (bad mode or shape); the message names the option."""


@dataclass(frozen=True)
class FrameFit:
    """How a frame was placed in the model input: the content occupies rows top:top+h, cols left:left+w."""

    image: np.ndarray  # model-sized uint8 RGB
    frame_height: int
    frame_width: int
    top: int
    left: int
    content_height: int
    content_width: int

    @property
    def model_height(self) -> int:
        return self.image.shape[0]

    @property
    def model_width(self) -> int:
        return self.image.shape[1]


def fit_frame(frame: np.ndarray, height: int, width: int, mode: str = "resize") -> FrameFit:
    """Resize (stretch) or letterbox an RGB uint8 frame to height x width."""
    if mode not in FIT_MODES:
        raise PreprocessError(f"--fit must be one of {', '.join(FIT_MODES)}, got {mode!r}")
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise PreprocessError(f"expected an H x W x 3 frame, got shape {frame.shape}")
    fh, fw = frame.shape[:2]
    if (fh, fw) == (height, width):
        return FrameFit(frame, fh, fw, 0, 0, fh, fw)
    if mode == "resize":
        return FrameFit(_resize(frame, height, width), fh, fw, 0, 0, height, width)
    scale = min(height / fh, width / fw)
    ch, cw = max(1, round(fh * scale)), max(1, round(fw * scale))
    top, left = (height - ch) // 2, (width - cw) // 2
    canvas = np.full((height, width, 3), PAD_VALUE, np.uint8)
    canvas[top : top + ch, left : left + cw] = _resize(frame, ch, cw)
    return FrameFit(canvas, fh, fw, top, left, ch, cw)


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    shrink = height <= image.shape[0] and width <= image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def crop_content(model_map: np.ndarray, fit: FrameFit) -> np.ndarray:
    """The part of a model-sized map (H x W, or C x H x W) that shows the frame (drops letterbox padding)."""
    if fit.top == 0 and fit.left == 0 and (fit.content_height, fit.content_width) == model_map.shape[-2:]:
        return model_map
    return model_map[..., fit.top : fit.top + fit.content_height, fit.left : fit.left + fit.content_width]


def labels_to_frame(labels: np.ndarray, fit: FrameFit) -> np.ndarray:
    """Model-sized class ids (H x W uint8) → frame-sized class ids (nearest neighbour: ids are not blended)."""
    content = crop_content(labels, fit)
    if content.shape == (fit.frame_height, fit.frame_width):
        return content
    return cv2.resize(
        np.ascontiguousarray(content), (fit.frame_width, fit.frame_height), interpolation=cv2.INTER_NEAREST
    )
