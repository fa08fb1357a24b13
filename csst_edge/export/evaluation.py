"""mIoU of an exported model on a labelled split, the way the vehicle runs it: resize the frame to the model's
input size, run the backend, resize the predicted labels back (nearest) and score at the label's resolution.

Numpy only (bincount confusion matrix, same conventions as `csst_edge.evaluate.metrics`: rows = ground truth,
ignore pixels and out-of-range ids not counted, classes absent from both prediction and target skipped).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np


class NumpyConfusion:
    def __init__(self, num_classes: int, ignore_index: int = 255):
        self.n, self.ignore_index = int(num_classes), ignore_index
        self.mat = np.zeros((self.n, self.n), np.int64)

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        target = target.reshape(-1).astype(np.int64)
        pred = pred.reshape(-1).astype(np.int64)
        keep = (target >= 0) & (target < self.n) & (target != self.ignore_index)
        pred, target = pred[keep], target[keep]
        if pred.size and (pred.min() < 0 or pred.max() >= self.n):
            raise ValueError(f"predicted class ids must lie in [0, {self.n}), got [{pred.min()}, {pred.max()}]")
        self.mat += np.bincount(self.n * target + pred, minlength=self.n * self.n).reshape(self.n, self.n)

    def compute(self) -> dict:
        h = self.mat.astype(np.float64)
        tp, gt, predicted = np.diag(h), h.sum(1), h.sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = tp / (gt + predicted - tp)
        total = h.sum()
        return {
            "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
            "per_class_iou": iou.tolist(),
            "pixel_accuracy": float(tp.sum() / total) if total > 0 else float("nan"),
        }


def evaluate_predictor(
    predict: Callable[[np.ndarray], np.ndarray],
    data: str | os.PathLike,
    split: str = "val",
    limit: int | None = None,
    size: tuple[int, int] | None = None,
    progress=None,
) -> dict:
    """mIoU of `predict(frame uint8 HxWx3 at `size`) -> labels HxW` over a dataset split.

    `progress`: an optional callable(advance) invoked once per image (e.g. a rich task update)."""
    from csst_edge.export.frames import dataset_info, iter_dataset, resize_frame, resize_label

    ds = dataset_info(data)
    cm = NumpyConfusion(ds.num_classes, ds.ignore_index)
    images = 0
    for _, image, label in iter_dataset(data, split, limit):
        frame = resize_frame(image, *size) if size else image
        pred = predict(frame)
        cm.update(resize_label(pred.astype(np.uint8), *label.shape[:2]), label)
        images += 1
        if progress is not None:
            progress(1)
    return {**cm.compute(), "images": images, "split": split, "data": str(data)}


def evaluate_onnx(
    model_path: str | os.PathLike,
    data: str | os.PathLike,
    split: str = "val",
    limit: int | None = None,
    threads: int | None = None,
    providers=("cpu",),
    progress=None,
) -> dict:
    """mIoU of an exported model (ONNX or engine) on a split; a dynamic model runs at its export size."""
    from csst_edge.runtime.backends import load_backend, predict_labels

    backend = load_backend(model_path, providers=providers, threads=threads)
    meta = backend.meta
    size = (meta.input_height or meta.export_height, meta.input_width or meta.export_width)
    batch = meta.batch or 1

    def predict(frame: np.ndarray) -> np.ndarray:
        out = backend.infer(np.repeat(frame[None], batch, axis=0))
        return predict_labels(out, meta)[0]

    try:
        return evaluate_predictor(predict, data, split, limit, size, progress)
    finally:
        backend.close()


def onnx_eval_fn(
    data: str | os.PathLike, split: str = "val", limit: int | None = None, threads: int | None = None
) -> Callable[[Path], float]:
    """An `eval_fn(model_path) -> mIoU` for `quantize_int8`'s automatic float fallback."""

    def eval_fn(model_path: Path) -> float:
        return evaluate_onnx(model_path, data, split, limit, threads)["miou"]

    return eval_fn
