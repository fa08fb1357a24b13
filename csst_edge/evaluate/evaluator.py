"""`evaluate`: run a model over a loader of (images, labels, names) and return mIoU and friends."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from csst_edge.errors import CsstError
from csst_edge.evaluate.inference import predict_logits
from csst_edge.evaluate.metrics import ConfusionMatrix
from csst_edge.fileio import atomic_write_image


class PredictionWriter:
    """Encodes and writes prediction PNGs on a small thread pool so the model never waits for PNG encoding.

    With a palette the PNG is RGB colours; without one it is the uint8 class-id map. At most `max_pending`
    images are queued, which bounds memory when the disk is slower than the model.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        palette: Sequence[Sequence[int]] | None,
        workers: int = 2,
        max_pending: int = 16,
    ):
        self.folder = Path(folder).resolve()
        self.lut = None if palette is None else np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="eval-png")
        self.pending: list[Future] = []
        self.max_pending = max_pending

    def path_for(self, name: str) -> Path:
        path = (self.folder / f"{name}.png").resolve()
        if not path.is_relative_to(self.folder):  # a name like '../x' must not escape the output folder
            raise CsstError(f"{name}: sample name leads outside the prediction folder {self.folder}")
        return path

    def submit(self, name: str, pred: np.ndarray) -> None:
        path = self.path_for(name)
        self.pending.append(self.pool.submit(self._write, path, pred))
        while len(self.pending) > self.max_pending:
            self.pending.pop(0).result()  # re-raises a failed write here, on the main thread

    def _write(self, path: Path, pred: np.ndarray) -> None:
        if self.lut is not None:
            if pred.max(initial=0) >= len(self.lut):
                raise CsstError(f"{path}: class id {pred.max()} has no palette colour ({len(self.lut)} colours)")
            image = self.lut[pred]
        else:
            image = pred.astype(np.uint8)
        atomic_write_image(path, image)

    def close(self) -> None:
        try:
            for f in self.pending:
                f.result()
        finally:
            self.pending.clear()
            self.pool.shutdown(wait=True)


def _is_sharded(loader) -> bool:
    """A loader fed by a DistributedSampler sees only this rank's shard, so the matrices must be summed."""
    return isinstance(getattr(loader, "sampler", None), DistributedSampler)


def evaluate(
    model,
    loader,
    num_classes: int,
    device,
    ignore_index: int = 255,
    progress: bool = True,
    mode: str = "single",
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    crop=None,
    stride=None,
    amp: bool = False,
    save_predictions: str | os.PathLike | None = None,
    palette: Sequence[Sequence[int]] | None = None,
    sharded: bool | None = None,
    console=None,
    per_image: bool = False,
) -> dict:
    """ConfusionMatrix.compute() of `model` over `loader`, plus `num_images` and `seconds`.

    The loader yields (images N×3×H×W normalised float, labels N×H×W long, names). `sharded`: whether every
    DDP rank evaluates its own part of the data and the confusion matrices must be summed across ranks; by
    default, exactly when the loader uses a DistributedSampler. (Rank 0 evaluating the whole set alone, as
    the trainer does, must not enter a collective the other ranks never join.) `save_predictions`: a folder
    for `<name>.png` predictions, coloured with `palette` when given. `per_image`: also return every image's own
    confusion matrix (`per_image_confusion`, an int64 numpy array N×C×C in loader order, and `names`), for the
    paired bootstrap of the round gate; not with a sharded loader. The model's train/eval flag is restored.
    """
    device = torch.device(device)
    if sharded is None:
        sharded = _is_sharded(loader)
    if per_image and sharded:
        raise ValueError("per_image confusion matrices need the whole val set on one process, not a sharded loader")
    was_training = model.training
    model.eval()
    confmat = ConfusionMatrix(num_classes, ignore_index)
    writer = PredictionWriter(save_predictions, palette) if save_predictions is not None else None
    is_main = not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
    bar = None
    if progress and is_main:
        from csst_edge.progress import progress_bar

        bar = progress_bar("img", console=console, transient=True)
    try:  # the sampler, not the dataset: under a DistributedSampler this rank sees only its shard
        total = len(loader.sampler)
    except (AttributeError, TypeError):
        total = None
    # fp16 autocast on CUDA; bfloat16 is the only autocast type CPUs support
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    id_dtype = torch.uint8 if num_classes <= 256 else torch.int32  # uint8: a quarter of the host copy
    num_images = 0
    image_mats: list[np.ndarray] = []
    image_names: list[str] = []
    start = time.perf_counter()
    try:
        with bar if bar is not None else contextlib.nullcontext():
            task = bar.add_task("eval", total=total) if bar is not None else None
            for images, labels, names in loader:
                images = images.to(device, non_blocking=True)
                labels = labels.to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
                    logits = predict_logits(
                        model,
                        images,
                        mode=mode,
                        scales=scales,
                        flip=flip,
                        num_classes=num_classes,
                        crop=crop,
                        stride=stride,
                    )
                pred = logits.argmax(1)
                confmat.update(pred, labels)
                if per_image:
                    image_mats.append(per_image_confusion(pred, labels, num_classes, ignore_index))
                    image_names += list(names)
                if writer is not None:
                    for name, p in zip(names, pred.to(id_dtype).cpu().numpy(), strict=True):
                        writer.submit(name, p)
                num_images += len(names)
                if bar is not None:
                    bar.update(task, advance=len(names))
        if writer is not None:
            writer.close()
            writer = None
    finally:
        if writer is not None:  # an error above: still wait for the writes in flight, then re-raise
            with contextlib.suppress(Exception):
                writer.close()
        model.train(was_training)
    if sharded:
        confmat.reduce_from_all_processes()
        if dist.is_available() and dist.is_initialized():
            count = torch.tensor([num_images], dtype=torch.int64, device=confmat.mat.device)
            dist.all_reduce(count)
            num_images = int(count.item())
    result = {**confmat.compute(), "num_images": num_images, "seconds": time.perf_counter() - start}
    if per_image:
        n = num_classes
        result["per_image_confusion"] = np.concatenate(image_mats) if image_mats else np.zeros((0, n, n), np.int64)
        result["names"] = image_names
    return result


@torch.inference_mode()
def per_image_confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255):
    """One C×C confusion matrix per image of a batch (N×H×W predictions and targets), as int64 numpy N×C×C;
    the same pixels count as in `ConfusionMatrix.update` (ignore and out-of-range targets are left out)."""
    n = num_classes
    batch = target.shape[0]
    target = target.reshape(batch, -1).to(torch.int64)
    pred = pred.reshape(batch, -1).to(target.device, torch.int64)
    keep = (target >= 0) & (target < n) & (target != ignore_index)
    image = torch.arange(batch, device=target.device).unsqueeze(1).expand_as(target)
    flat = (image * n * n + n * target + pred)[keep]
    mats = torch.bincount(flat, minlength=batch * n * n).reshape(batch, n, n)
    return mats.cpu().numpy()
