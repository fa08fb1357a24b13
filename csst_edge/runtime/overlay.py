"""Colour overlay of class ids on a frame, and the on-screen status text. OpenCV + numpy, torch-free."""

from __future__ import annotations

import cv2
import numpy as np


def palette_lut(palette: list[list[int]], num_classes: int) -> np.ndarray:
    """256 x 3 uint8 lookup table: class id → RGB; ids without a colour (ignore, out of range) are black."""
    lut = np.zeros((256, 3), np.uint8)
    for i, colour in enumerate(palette[:256]):
        lut[i] = colour
    rng = np.random.default_rng(0)
    for i in range(len(palette), min(num_classes, 256)):  # a model exported without a palette still gets colours
        lut[i] = rng.integers(0, 256, 3)
    return lut


def colorize(labels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    return lut[labels]


def blend_overlay(frame: np.ndarray, labels: np.ndarray, lut: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """frame (RGB uint8) with the class colours blended in at `alpha`; labels must have the frame's size."""
    return cv2.addWeighted(frame, 1.0 - alpha, colorize(labels, lut), alpha, 0.0)


def draw_text(image: np.ndarray, lines: list[str]) -> np.ndarray:
    """Status lines in the top-left corner, white on a dark band so they stay readable on any scene."""
    scale = max(0.35, image.shape[0] / 720)
    thickness = 1 if scale < 0.8 else 2
    y = 0
    for line in lines:
        (w, h), base = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        cv2.rectangle(image, (0, y), (w + 8, y + h + base + 6), (0, 0, 0), -1)
        cv2.putText(
            image, line, (4, y + h + 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA
        )
        y += h + base + 6
    return image
