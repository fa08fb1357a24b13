"""Presenting evaluation results: a rich table for the terminal and eval.json for the run directory."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from rich.table import Table

from csst_edge.fileio import atomic_write_json


def _pct(value: float | None) -> str:
    # nan = the class appears in neither labels nor predictions: there is nothing to score, which is not 0
    return "–" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def metrics_table(metrics: dict, class_names: Sequence[str], title: str = "evaluation") -> Table:
    """Per-class IoU (%), then mIoU, pixel accuracy and mean class accuracy."""
    table = Table(title=title, title_justify="left")
    table.add_column("class")
    table.add_column("IoU %", justify="right")
    for name, iou in zip(class_names, metrics["per_class_iou"], strict=True):
        table.add_row(str(name), _pct(iou))
    table.add_section()
    table.add_row("[bold]mIoU[/]", f"[bold]{_pct(metrics['miou'])}[/]")
    table.add_row("pixel acc", _pct(metrics["pixel_accuracy"]))
    if "mean_accuracy" in metrics:
        table.add_row("mean acc", _pct(metrics["mean_accuracy"]))
    return table


def _json_safe(value):
    """NaN is not valid JSON: an undefined score becomes null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_eval_json(
    path: str | os.PathLike, metrics: dict, class_names: Sequence[str], extra: dict | None = None
) -> dict:
    """Write metrics (IoU per class keyed by name, confusion rows = ground truth) atomically; returns the record."""
    record = {
        "miou": metrics["miou"],
        "pixel_accuracy": metrics["pixel_accuracy"],
        "mean_accuracy": metrics.get("mean_accuracy"),
        "per_class_iou": dict(zip(map(str, class_names), metrics["per_class_iou"], strict=True)),
        "class_names": list(map(str, class_names)),
        "num_images": metrics.get("num_images"),
        "seconds": metrics.get("seconds"),
        "confusion": metrics.get("confusion"),
        **(extra or {}),
    }
    record = _json_safe(record)
    atomic_write_json(path, record)
    return record
