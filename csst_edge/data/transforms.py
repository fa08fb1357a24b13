"""Paired (image, label) transforms on numpy arrays, torchvision-references style.

Every transform takes and returns `(image, label, anchor)`, where `anchor` is an optional (y, x) point that
must end up inside the final crop (the centroid that centroid sampling chose); geometric transforms move it
along with the pixels. Randomness comes from the `rng` argument so a sample is reproducible from
(seed, epoch, index) regardless of which DataLoader worker decodes it. Labels are always resized with
nearest-neighbour. A label may carry extra per-pixel channels (HxWxC uint8, e.g. top-k soft-label ids and
probabilities): they get exactly the label's geometry. Torch-free on purpose: the same code serves the trainer and
numpy-only tools.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from csst_edge.data.sampler import crop_window_containing

Anchor = tuple[int, int] | None


class Compose:
    def __init__(self, transforms: Sequence):
        self.transforms = list(transforms)

    def __call__(self, image, label, anchor: Anchor = None, rng: np.random.Generator | None = None):
        rng = rng if rng is not None else np.random.default_rng()
        for t in self.transforms:
            image, label, anchor = t(image, label, anchor, rng)
        return image, label, anchor

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(repr(t) for t in self.transforms) + ")"


class RandomScale:
    """Resize by a factor drawn uniformly from [min_scale, max_scale] (the paper's 0.5-2.0)."""

    def __init__(self, min_scale: float = 0.5, max_scale: float = 2.0):
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"scale range must satisfy 0 < min <= max, got {min_scale}, {max_scale}")
        self.min_scale, self.max_scale = min_scale, max_scale

    def __call__(self, image, label, anchor, rng):
        s = rng.uniform(self.min_scale, self.max_scale)
        h, w = label.shape[:2]
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        label = _resize_nearest(label, (nh, nw))
        if anchor is not None:
            # map pixel centres, clamp so rounding never pushes the point off the image
            anchor = (min(nh - 1, int((anchor[0] + 0.5) * nh / h)), min(nw - 1, int((anchor[1] + 0.5) * nw / w)))
        return image, label, anchor

    def __repr__(self) -> str:
        return f"RandomScale({self.min_scale}, {self.max_scale})"


class RandomCrop:
    """Crop `size` = (h, w). Smaller images are padded bottom/right (image with `fill`, label with ignore).

    With an anchor the crop is drawn uniformly among the windows that contain it, so the sampled centroid's
    object is always in view; without one, uniformly among all windows. `ignore_index` may be a per-channel
    tuple for multi-channel labels.
    """

    def __init__(self, size: tuple[int, int], ignore_index: int | Sequence[int] = 255, fill: Sequence[int] = (0, 0, 0)):
        self.size = (int(size[0]), int(size[1]))
        self.ignore_index = ignore_index
        self.fill = tuple(int(v) for v in fill)

    def __call__(self, image, label, anchor, rng):
        ch, cw = self.size
        h, w = label.shape[:2]
        if h < ch or w < cw:
            image = _pad_bottom_right(image, max(h, ch), max(w, cw), self.fill)
            label = _pad_bottom_right(label, max(h, ch), max(w, cw), self.ignore_index)
            h, w = label.shape[:2]
        if anchor is None:
            top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        else:
            top, left = crop_window_containing(h, w, ch, cw, anchor[0], anchor[1], rng)
            anchor = (anchor[0] - top, anchor[1] - left)
        return image[top : top + ch, left : left + cw], label[top : top + ch, left : left + cw], anchor

    def __repr__(self) -> str:
        return f"RandomCrop({self.size})"


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, image, label, anchor, rng):
        if rng.random() < self.p:
            image, label = image[:, ::-1], label[:, ::-1]
            if anchor is not None:
                anchor = (anchor[0], label.shape[1] - 1 - anchor[1])
        return image, label, anchor

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip({self.p})"


class RandomGaussianBlur:
    """Blur the image (never the label) with probability p, sigma uniform in `sigma`."""

    def __init__(self, p: float = 0.5, sigma: tuple[float, float] = (0.1, 2.0)):
        self.p, self.sigma = p, sigma

    def __call__(self, image, label, anchor, rng):
        if rng.random() < self.p:
            s = rng.uniform(*self.sigma)
            k = 2 * int(np.ceil(3 * s)) + 1
            image = cv2.GaussianBlur(np.ascontiguousarray(image), (k, k), s)
        return image, label, anchor

    def __repr__(self) -> str:
        return f"RandomGaussianBlur({self.p}, {self.sigma})"


class ColorJitter:
    """Brightness, contrast and saturation factors uniform in [1-s, 1+s] (the recipe's 0.1), in random order."""

    def __init__(self, brightness: float = 0.1, contrast: float = 0.1, saturation: float = 0.1):
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation

    def __call__(self, image, label, anchor, rng):
        img = image.astype(np.float32)
        for op in rng.permutation(3):
            if op == 0 and self.brightness:
                img *= rng.uniform(1 - self.brightness, 1 + self.brightness)
            elif op == 1 and self.contrast:
                gray_mean = (img @ np.array([0.299, 0.587, 0.114], np.float32)).mean()
                img = (img - gray_mean) * rng.uniform(1 - self.contrast, 1 + self.contrast) + gray_mean
            elif op == 2 and self.saturation:
                gray = (img @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
                img = (img - gray) * rng.uniform(1 - self.saturation, 1 + self.saturation) + gray
        return np.clip(img, 0, 255).astype(np.uint8), label, anchor

    def __repr__(self) -> str:
        return f"ColorJitter({self.brightness}, {self.contrast}, {self.saturation})"


def _resize_nearest(label: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    out = cv2.resize(label, (size_hw[1], size_hw[0]), interpolation=cv2.INTER_NEAREST)
    return out[..., None] if label.ndim == 3 and out.ndim == 2 else out  # cv2 drops a single channel axis


def _pad_bottom_right(array: np.ndarray, h: int, w: int, value) -> np.ndarray:
    out = np.empty((h, w) + array.shape[2:], array.dtype)
    out[...] = np.asarray(value, array.dtype)
    out[: array.shape[0], : array.shape[1]] = array
    return out


def normalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """RGB uint8 HxWx3 -> float32 3xHxW, (x/255 - mean)/std: the same arithmetic the exported graph does."""
    x = image.astype(np.float32) * (1.0 / 255.0)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def train_transforms(
    crop: tuple[int, int],
    scale: tuple[float, float] = (0.5, 2.0),
    ignore_index: int | Sequence[int] = 255,
    flip: bool = True,
    blur: float = 0.5,
    jitter: float = 0.1,
    fill: Sequence[int] = (124, 116, 104),  # ImageNet mean in 0..255: normalises to ~0, so padding looks "empty"
) -> Compose:
    """The paper's recipe: random scale, (anchored) random crop, flip, blur, colour jitter."""
    steps: list = [RandomScale(*scale), RandomCrop(crop, ignore_index, fill)]
    if flip:
        steps.append(RandomHorizontalFlip(0.5))
    if blur:
        steps.append(RandomGaussianBlur(blur))
    if jitter:
        steps.append(ColorJitter(jitter, jitter, jitter))
    return Compose(steps)
