"""Test-time inference: single scale, multi-scale + flip, and sliding window.

Every mode is built from "views" of the image (one scale, flipped or not). A view yields logits at the
input resolution. One view is returned as it is; several views are combined by averaging their softmax
probabilities (averaging logits would let one over-confident scale dominate), so with several views and
output="logits" the result is the log of the averaged probabilities: its argmax and softmax are those of the
ensemble, but it is not any single network's logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

MODES = ("single", "multiscale", "slide")


def _pair(value, what: str) -> tuple[int, int]:
    if isinstance(value, int):
        value = (value, value)
    h, w = (int(v) for v in value)
    if h <= 0 or w <= 0:
        raise ValueError(f"{what} must be positive, got {h}x{w}")
    return h, w


def _forward(model, x: torch.Tensor) -> torch.Tensor:
    """Logits at x's resolution. Tolerates models that return a dict ('out') or a tuple (main output first)."""
    out = model(x)
    if isinstance(out, dict):
        out = out["out"]
    elif isinstance(out, (tuple, list)):
        out = out[0]
    if out.shape[-2:] != x.shape[-2:]:
        out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return out


def _slide(model, x: torch.Tensor, crop: tuple[int, int], stride: tuple[int, int]) -> torch.Tensor:
    """Logits of a crop-sized window slid over x, averaged where windows overlap.

    An image smaller than the crop is zero-padded at the bottom/right (zero is the mean colour after
    normalisation) so the model always sees its training crop size; the padding is cut off again.
    """
    n, _, h, w = x.shape
    ch, cw = crop
    sh, sw = stride
    ph, pw = max(ch - h, 0), max(cw - w, 0)
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph))
    H, W = x.shape[-2:]
    rows = max(H - ch + sh - 1, 0) // sh + 1
    cols = max(W - cw + sw - 1, 0) // sw + 1
    total = count = None
    for r in range(rows):
        for c in range(cols):
            y0, x0 = min(r * sh, H - ch), min(c * sw, W - cw)  # the last window is aligned to the border
            logits = _forward(model, x[:, :, y0 : y0 + ch, x0 : x0 + cw]).float()
            if total is None:
                total = logits.new_zeros((n, logits.shape[1], H, W))
                count = logits.new_zeros((1, 1, H, W))
            total[:, :, y0 : y0 + ch, x0 : x0 + cw] += logits
            count[:, :, y0 : y0 + ch, x0 : x0 + cw] += 1
    return (total / count)[:, :, :h, :w]


@torch.inference_mode()
def predict_logits(
    model,
    x: torch.Tensor,
    mode: str = "single",
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    num_classes: int | None = None,
    output: str = "logits",
    crop: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
) -> torch.Tensor:
    """N×C×H×W scores for a normalised N×3×H×W batch `x` on the model's device.

    mode: "single" (scale 1; `scales` is not used), "multiscale" (every scale in `scales`), "slide" (a `crop`
    window moved by `stride`, default two thirds of the crop, at every scale in `scales`). `flip` adds the
    horizontally flipped image to every view. output: "logits" or "probs" (see the module docstring for what
    "logits" means with several views). `num_classes`, when given, is checked against the model's output.
    The model must already be in eval mode; this function does not change it.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if output not in ("logits", "probs"):
        raise ValueError(f"output must be 'logits' or 'probs', got {output!r}")
    if mode == "slide":
        if crop is None:
            raise ValueError("mode 'slide' needs a crop size")
        crop = _pair(crop, "crop")
        stride = _pair(stride, "stride") if stride is not None else (max(1, crop[0] * 2 // 3), max(1, crop[1] * 2 // 3))
    scales = (1.0,) if mode == "single" else tuple(float(s) for s in scales)
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"scales must be positive numbers, got {scales}")

    h, w = x.shape[-2:]

    def view(image: torch.Tensor) -> torch.Tensor:
        return _slide(model, image, crop, stride) if mode == "slide" else _forward(model, image)

    views = []
    for s in scales:
        xs = (
            x
            if s == 1.0
            else F.interpolate(
                x, size=(max(1, round(h * s)), max(1, round(w * s))), mode="bilinear", align_corners=False
            )
        )
        for flipped in (False, True) if flip else (False,):
            logits = view(xs.flip(-1)).flip(-1) if flipped else view(xs)
            if logits.shape[-2:] != (h, w):
                logits = F.interpolate(logits.float(), size=(h, w), mode="bilinear", align_corners=False)
            views.append(logits)
    if num_classes is not None and views[0].shape[1] != num_classes:
        raise ValueError(f"model returns {views[0].shape[1]} channels, expected {num_classes} classes")

    if len(views) == 1:
        logits = views[0].float()
        return logits if output == "logits" else logits.softmax(1)
    probs = views[0].float().softmax(1)
    for v in views[1:]:
        probs += v.float().softmax(1)
    probs /= len(views)
    # clamp: a probability that underflowed to 0 would give -inf, which breaks later arithmetic
    return probs if output == "probs" else probs.clamp_min(torch.finfo(probs.dtype).tiny).log()
