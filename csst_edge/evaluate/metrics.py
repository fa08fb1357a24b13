"""Segmentation metrics from one confusion matrix, torchvision-references style (bincount, reduce, compute)."""

from __future__ import annotations

import torch
import torch.distributed as dist


class ConfusionMatrix:
    """Accumulates a C×C matrix, rows = ground truth, columns = prediction.

    The matrix lives on the device of the first update, so a CUDA evaluation never copies labels to the host.
    Target pixels equal to `ignore_index` or outside [0, C) are not counted.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255):
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.mat: torch.Tensor | None = None

    # inference_mode everywhere the matrix is touched: a tensor created in inference mode may only be
    # updated in place inside it.
    @torch.inference_mode()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        n = self.num_classes
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} does not match target shape {tuple(target.shape)}")
        if self.mat is None:
            self.mat = torch.zeros((n, n), dtype=torch.int64, device=target.device)
        target = target.flatten().to(self.mat.device, torch.int64)
        pred = pred.flatten().to(self.mat.device, torch.int64)
        keep = (target >= 0) & (target < n) & (target != self.ignore_index)
        target, pred = target[keep], pred[keep]
        if pred.numel():
            lo, hi = torch.stack(torch.aminmax(pred)).tolist()  # one device sync, not two
            # an out-of-range prediction would silently land in another cell of the flattened matrix
            if lo < 0 or hi >= n:
                raise ValueError(f"predicted class ids must lie in [0, {n}), got [{lo}, {hi}]")
        self.mat += torch.bincount(n * target + pred, minlength=n * n).reshape(n, n)

    def reset(self) -> None:
        self.mat = None

    @torch.inference_mode()
    def reduce_from_all_processes(self) -> None:
        """Sum the matrices of all DDP ranks (each evaluated its own shard). No-op without a process group."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return
        if self.mat is None:  # a rank whose shard was empty still has to join the collective
            device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
            self.mat = torch.zeros((self.num_classes,) * 2, dtype=torch.int64, device=device)
        dist.all_reduce(self.mat)

    def compute(self) -> dict:
        """miou, per_class_iou, pixel_accuracy, mean_accuracy (fractions in [0, 1]) and the raw confusion.

        A class absent from both target and prediction has IoU nan and does not enter the mean; a class that is
        only predicted (never in the target) has IoU 0, as it should: every pixel of it is a false positive.
        """
        n = self.num_classes
        mat = self.mat if self.mat is not None else torch.zeros((n, n), dtype=torch.int64)
        h = mat.double().cpu()
        tp = torch.diag(h)
        gt, predicted, total = h.sum(1), h.sum(0), h.sum()
        iou = tp / (gt + predicted - tp)  # 0/0 → nan for classes seen nowhere
        acc = tp / gt
        return {
            "miou": _nanmean(iou),
            "per_class_iou": iou.tolist(),
            "pixel_accuracy": float(tp.sum() / total) if total > 0 else float("nan"),
            "mean_accuracy": _nanmean(acc),
            "confusion": mat.cpu().tolist(),
        }

    def __str__(self) -> str:
        m = self.compute()
        ious = ", ".join(f"{100 * v:.1f}" for v in m["per_class_iou"])
        return f"mIoU {100 * m['miou']:.2f}  pixel acc {100 * m['pixel_accuracy']:.2f}  IoU per class [{ious}]"


def _nanmean(values: torch.Tensor) -> float:
    valid = values[~torch.isnan(values)]
    return float(valid.mean()) if valid.numel() else float("nan")
