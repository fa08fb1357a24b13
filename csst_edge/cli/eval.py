"""`csst-edge eval`: mIoU, per-class IoU and the confusion matrix of a checkpoint on a dataset split."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from csst_edge.cli.common import Device, Flip, LoaderWorkers, Quiet, console, fail, out_option, settings_from
from csst_edge.sizes import parse_hw

PAPER_SCALES = "0.5,0.75,1.0,1.25,1.5,1.75"


def parse_scales(text: str) -> tuple[float, ...]:
    try:
        scales = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        fail(f"--scales: '{text}' is not a comma-separated list of numbers, e.g. {PAPER_SCALES}")
    if not scales or any(s <= 0 for s in scales):
        fail(f"--scales: '{text}' must list positive numbers, e.g. {PAPER_SCALES}")
    return scales


_HELP = {  # help texts too long to stand on their option's line, by parameter name
    "data": "Dataset YAML or built-in name (camvid). Default: the checkpoint's validation set.",
    "mode": "single, multiscale (average over --scales) or slide (sliding --crop window).",
    "scales": f"Comma-separated scales for multiscale / slide (multiscale default {PAPER_SCALES}).",
    "save_predictions": "Also write coloured prediction PNGs (<name>.png) to this folder.",
}


def eval_command(
    checkpoint: Annotated[Path, typer.Argument(help="Model checkpoint (.pt), e.g. runs/student/best.pt.")],
    data: Annotated[str | None, typer.Option(help=_HELP["data"])] = None,
    split: Annotated[str, typer.Option(help="Dataset split to evaluate.")] = "val",
    mode: Annotated[str, typer.Option(help=_HELP["mode"])] = "single",
    scales: Annotated[str | None, typer.Option(help=_HELP["scales"])] = None,
    flip: Flip = False,
    crop: Annotated[str | None, typer.Option(help="Sliding window HxW for --mode slide, e.g. 512x1024.")] = None,
    stride: Annotated[str | None, typer.Option(help="Sliding-window stride HxW (default: 2/3 of --crop).")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass (they must share one size).")] = 1,
    workers: LoaderWorkers = 2,
    device: Device = "auto",
    amp: Annotated[bool, typer.Option(help="Mixed precision (fp16 on CUDA, bf16 on CPU).")] = False,
    out: Annotated[Path | None, out_option("Folder for eval_<split>.json (default: the checkpoint's folder).")] = None,
    save_predictions: Annotated[Path | None, typer.Option(help=_HELP["save_predictions"])] = None,
    limit: Annotated[int | None, typer.Option(help="Evaluate only the first N images of the split.")] = None,
    quiet: Quiet = False,
) -> None:
    """Evaluate a checkpoint: per-class IoU, mIoU, pixel accuracy; writes eval_<split>.json.

    Examples:

      csst-edge eval runs/student/best.pt --data camvid

      csst-edge eval best.pt --data camvid --mode multiscale --flip

      csst-edge eval best.pt --data city.yaml --mode slide --crop 512x1024 --save-predictions preds/

      torchrun --nproc_per_node 2 -m csst_edge eval best.pt --data camvid   (images sharded over ranks)
    """
    from csst_edge.evaluate.checkpoint_eval import EvalSettings, run_eval

    # option checks first: a typo should not cost a model load
    _check_options(mode, scales, crop, stride, batch_size, limit, workers)
    settings = settings_from(
        EvalSettings,
        locals(),
        scales=parse_scales(scales or (PAPER_SCALES if mode == "multiscale" else "1.0")),
        crop=parse_hw(crop, "--crop") if crop is not None else None,
        stride=parse_hw(stride, "--stride") if stride is not None else None,
        progress=not quiet,
    )
    run = run_eval(checkpoint, settings, out, console=console, ranks=_torchrun_ranks)
    if run is not None:  # only the main rank reports
        _print_result(run, settings)


@contextmanager
def _torchrun_ranks(device: str):
    """torchrun's process group when the command was launched by it, and this rank's device; left at the end."""
    from csst_edge.train.distributed import cleanup, setup_distributed

    info, dev = setup_distributed(device)
    try:
        yield info, dev
    finally:
        cleanup(info)


def _check_options(mode: str, scales, crop, stride, batch_size: int, limit, workers: int) -> None:
    if mode not in ("single", "multiscale", "slide"):
        fail(f"--mode: '{mode}' is not one of single, multiscale, slide")
    if scales is not None and mode == "single" and parse_scales(scales) != (1.0,):
        fail("--scales: needs --mode multiscale (or slide); --mode single runs at scale 1 only")
    if mode == "slide" and crop is None:
        fail("--crop: --mode slide needs a window size, e.g. --crop 512x1024")
    if mode != "slide" and (crop is not None or stride is not None):
        fail(f"--{'crop' if crop is not None else 'stride'}: only used with --mode slide")
    for name, value in (("--batch-size", batch_size), ("--limit", limit or 1)):
        if value < 1:
            fail(f"{name}: must be at least 1, got {value}")
    if workers < 0:
        fail(f"--workers: must be 0 or more, got {workers}")


def _print_result(run, settings) -> None:
    from csst_edge.evaluate.report import metrics_table

    metrics = run.metrics
    how = settings.mode
    if settings.mode != "single":
        how += " " + ",".join(f"{s:g}" for s in settings.scales)
    how += " + flip" if settings.flip else ""
    # a short title: the table is narrow and rich wraps a long one over several lines
    console.print(metrics_table(metrics, run.class_names, title=f"{run.dataset_name} {settings.split}"))
    console.print(f"{metrics['num_images']} images, {how}", highlight=False)
    saved = settings.save_predictions
    where = f"; predictions in {saved}" if saved is not None else ""
    console.print(
        f"[green]done[/]: mIoU {100 * metrics['miou']:.2f} in {metrics['seconds']:.1f}s → {run.json_path}{where}"
    )
