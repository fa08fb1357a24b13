"""Comparison reports: a rich table, a markdown table and a per-class bar chart for several models' mIoU."""

from __future__ import annotations

import math
from pathlib import Path

from rich.table import Table

from csst_edge.fileio import atomic_write_text


def _pct(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def comparison_table(results: dict[str, dict], class_names: list[str], title: str) -> Table:
    """results: model label -> {"miou": float, "per_class_iou": [float|None...]} (fractions)."""
    table = Table(title=title, show_lines=False)
    table.add_column("class")
    for label in results:
        table.add_column(label, justify="right")
    best = {c: max((r["per_class_iou"][c] or 0.0) for r in results.values()) for c in range(len(class_names))}
    for c, name in enumerate(class_names):
        cells = []
        for r in results.values():
            v = r["per_class_iou"][c]
            cells.append(f"[bold]{_pct(v)}[/]" if v is not None and v == best[c] and len(results) > 1 else _pct(v))
        table.add_row(name, *cells)
    table.add_section()
    table.add_row("[bold]mIoU[/]", *[f"[bold]{_pct(r['miou'])}[/]" for r in results.values()])
    return table


def markdown_table(results: dict[str, dict], class_names: list[str]) -> str:
    labels = list(results)
    lines = ["| class | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    for c, name in enumerate(class_names):
        lines.append(f"| {name} | " + " | ".join(_pct(results[m]["per_class_iou"][c]) for m in labels) + " |")
    lines.append("| **mIoU** | " + " | ".join(f"**{_pct(results[m]['miou'])}**" for m in labels) + " |")
    return "\n".join(lines) + "\n"


def per_class_bar_chart(results: dict[str, dict], class_names: list[str], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    n, m = len(class_names), len(results)
    width = 0.8 / m
    fig, ax = plt.subplots(figsize=(max(8, 0.6 * n + 2), 4.5))
    for i, (label, r) in enumerate(results.items()):
        values = [100 * (v or 0.0) for v in r["per_class_iou"]]
        ax.bar(np.arange(n) + (i - (m - 1) / 2) * width, values, width, label=f"{label} ({100 * r['miou']:.1f})")
    ax.set_xticks(np.arange(n), class_names, rotation=45, ha="right")
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(title="model (mIoU)", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def write_markdown(path: Path, title: str, sections: list[tuple[str, str]]) -> Path:
    text = f"# {title}\n\n" + "\n".join(f"## {head}\n\n{body}\n" for head, body in sections)
    atomic_write_text(path, text)
    return path


def prediction_grid(checkpoints: dict[str, Path], data, split: str, path: Path, frames: int = 4, device="cpu") -> Path:
    """A PNG with one row per val frame: the image, its ground truth, then each checkpoint's prediction, all in the
    dataset's palette, with a title over each column. What people would rather look at than read."""
    import cv2
    import numpy as np
    import torch

    from csst_edge.data.dataset import colorize, list_samples, load_dataset_config, load_pair
    from csst_edge.data.transforms import normalize
    from csst_edge.fileio import atomic_write_bytes
    from csst_edge.models.checkpoint import model_from_checkpoint, normalization

    ds = load_dataset_config(data)
    samples = list_samples(ds, split)
    # frames spread over the split, not just its first few (neighbouring frames look alike)
    picks = [samples[i] for i in np.linspace(0, len(samples) - 1, min(frames, len(samples))).round().astype(int)]
    models = {label: model_from_checkpoint(ckpt) for label, ckpt in checkpoints.items()}
    rows = []
    for sample in picks:
        image, label = load_pair(ds, sample)
        cells = [image, colorize(label, ds.palette)]
        for model, state in models.values():
            mean, std = normalization(state)
            x = torch.from_numpy(normalize(image, mean, std))[None].to(device)
            with torch.no_grad():
                pred = model.to(device)(x).argmax(1)[0].cpu().numpy().astype(np.uint8)
            cells.append(colorize(pred, ds.palette))
        rows.append(np.concatenate([np.pad(c, ((2, 2), (2, 2), (0, 0)), constant_values=255) for c in cells], axis=1))
    grid = np.concatenate(rows, axis=0)
    cell_w = grid.shape[1] // (2 + len(models))
    header = np.full((24, grid.shape[1], 3), 255, np.uint8)
    for i, title in enumerate(["image", "ground truth", *models]):
        cv2.putText(header, title, (i * cell_w + 6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    grid = np.concatenate([header, grid], axis=0)
    ok, png = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"could not encode {path}")
    atomic_write_bytes(path, png.tobytes())
    return path
