"""Single-scale mIoU of a checkpoint on a dataset split: the number the demo, the round gate, few-shot runs
and the benchmarks compare."""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import DataLoader

from csst_edge.data.selection import SourceConfig
from csst_edge.evaluate.dataset import collate_eval, eval_dataset
from csst_edge.evaluate.evaluator import evaluate
from csst_edge.models.checkpoint import model_from_checkpoint, normalization
from csst_edge.models.device import resolve_device


def evaluate_checkpoint(
    checkpoint: Path, data, split: str, device: str = "auto", workers: int = 2, per_image: bool = False
):
    """Single-scale mIoU of a checkpoint on a dataset split. Returns (metrics, class_names); with `per_image`,
    metrics also hold `per_image_confusion` (numpy N×C×C, in the split's fixed order) and the image `names`,
    which the round gate's paired bootstrap needs (drop them before writing metrics to JSON)."""
    dev = resolve_device(device)
    model, state = model_from_checkpoint(checkpoint)
    mean, std = normalization(state)
    dataset, ds = eval_dataset(SourceConfig(data=str(data), split=split), mean, std)
    loader = DataLoader(dataset, batch_size=1, num_workers=workers, collate_fn=collate_eval)
    metrics = evaluate(
        model.to(dev), loader, ds.num_classes, dev, ignore_index=ds.ignore_index, progress=False, per_image=per_image
    )
    result = {
        "miou": metrics["miou"],
        "per_class_iou": [None if v != v else v for v in metrics["per_class_iou"]],
        "pixel_accuracy": metrics["pixel_accuracy"],
    }
    if per_image:
        result["per_image_confusion"] = metrics["per_image_confusion"]
        result["names"] = metrics["names"]
    return result, ds.class_names
