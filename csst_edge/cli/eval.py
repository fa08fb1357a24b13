"""`csst-edge eval`: mIoU, per-class IoU and the confusion matrix of a checkpoint on a dataset split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from csst_edge.cli.common import console, fail
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


def eval_command(
    checkpoint: Annotated[Path, typer.Argument(help="Model checkpoint (.pt), e.g. runs/student/best.pt.")],
    data: Annotated[
        str | None,
        typer.Option(help="Dataset YAML or built-in name (camvid). Default: the checkpoint's validation set."),
    ] = None,
    split: Annotated[str, typer.Option(help="Dataset split to evaluate.")] = "val",
    mode: Annotated[
        str, typer.Option(help="single, multiscale (average over --scales) or slide (sliding --crop window).")
    ] = "single",
    scales: Annotated[
        str | None,
        typer.Option(help=f"Comma-separated scales for multiscale / slide (multiscale default {PAPER_SCALES})."),
    ] = None,
    flip: Annotated[bool, typer.Option(help="Also average with the horizontally flipped prediction.")] = False,
    crop: Annotated[str | None, typer.Option(help="Sliding window HxW for --mode slide, e.g. 512x1024.")] = None,
    stride: Annotated[str | None, typer.Option(help="Sliding-window stride HxW (default: 2/3 of --crop).")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass (they must share one size).")] = 1,
    workers: Annotated[int, typer.Option(help="DataLoader decoding workers.")] = 2,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = "auto",
    amp: Annotated[bool, typer.Option(help="Mixed precision (fp16 on CUDA, bf16 on CPU).")] = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Folder for eval_<split>.json (default: the checkpoint's folder)."),
    ] = None,
    save_predictions: Annotated[
        Path | None, typer.Option(help="Also write coloured prediction PNGs (<name>.png) to this folder.")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Evaluate only the first N images of the split.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Evaluate a checkpoint: per-class IoU, mIoU, pixel accuracy; writes eval_<split>.json.

    Examples:

      csst-edge eval runs/student/best.pt --data camvid

      csst-edge eval best.pt --data camvid --mode multiscale --flip

      csst-edge eval best.pt --data city.yaml --mode slide --crop 512x1024 --save-predictions preds/

      torchrun --nproc_per_node 2 -m csst_edge eval best.pt --data camvid   (images sharded over ranks)
    """
    import torch
    from torch.utils.data import DataLoader, Subset

    from csst_edge.data.selection import SourceConfig
    from csst_edge.errors import CheckpointError
    from csst_edge.evaluate import evaluate
    from csst_edge.evaluate.dataset import collate_eval, eval_dataset
    from csst_edge.evaluate.report import metrics_table, write_eval_json
    from csst_edge.fileio import file_sha256
    from csst_edge.models.checkpoint import load_checkpoint, model_from_checkpoint, normalization
    from csst_edge.train.distributed import cleanup, setup_distributed

    # option checks first: a typo should not cost a model load
    if mode not in ("single", "multiscale", "slide"):
        fail(f"--mode: '{mode}' is not one of single, multiscale, slide")
    if scales is not None and mode == "single" and parse_scales(scales) != (1.0,):
        fail("--scales: needs --mode multiscale (or slide); --mode single runs at scale 1 only")
    scale_list = parse_scales(scales or (PAPER_SCALES if mode == "multiscale" else "1.0"))
    if mode == "slide" and crop is None:
        fail("--crop: --mode slide needs a window size, e.g. --crop 512x1024")
    if mode != "slide" and (crop is not None or stride is not None):
        fail(f"--{'crop' if crop is not None else 'stride'}: only used with --mode slide")
    crop_hw = parse_hw(crop, "--crop") if crop is not None else None
    stride_hw = parse_hw(stride, "--stride") if stride is not None else None
    for name, value in (("--batch-size", batch_size), ("--limit", limit or 1)):
        if value < 1:
            fail(f"{name}: must be at least 1, got {value}")
    if workers < 0:
        fail(f"--workers: must be 0 or more, got {workers}")

    state = load_checkpoint(checkpoint)  # first: names a missing / unreadable file before anything else
    try:
        model, state = model_from_checkpoint(state)
    except CheckpointError as e:  # loaded from a dict, the message says 'checkpoint'; name the file instead
        raise CheckpointError(f"{checkpoint}: {str(e).removeprefix('checkpoint: ')}") from None
    if data is None:
        data = ((state.get("config") or {}).get("val") or {}).get("data")
        if not data:
            fail(f"--data: {checkpoint} records no validation set; name a dataset YAML or built-in name")
    info, dev = setup_distributed(device)
    mean, std = normalization(state)
    dataset, ds = eval_dataset(SourceConfig(data=str(data), split=split, limit=limit), mean, std)
    if ds.num_classes != int(state["num_classes"]):
        fail(f"{checkpoint}: model has {state['num_classes']} classes, dataset {data} has {ds.num_classes}")
    if info.enabled:  # every rank takes every world_size-th image; the confusion matrices are summed
        dataset = Subset(dataset, range(info.rank, len(dataset), info.world_size))
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_eval, pin_memory=dev.type == "cuda"
    )
    try:
        metrics = evaluate(
            model.to(dev),
            loader,
            ds.num_classes,
            dev,
            ignore_index=ds.ignore_index,
            progress=not quiet,
            mode=mode,
            scales=scale_list,
            flip=flip,
            crop=crop_hw,
            stride=stride_hw,
            amp=amp,
            save_predictions=save_predictions,
            palette=ds.palette,
            sharded=info.enabled,
            console=console,
        )
    finally:
        cleanup(info)
    if not info.is_main:
        return
    how = mode + (" " + ",".join(f"{s:g}" for s in scale_list) if mode != "single" else "")
    how += " + flip" if flip else ""
    # a short title: the table is narrow and rich wraps a long one over several lines
    console.print(metrics_table(metrics, ds.class_names, title=f"{ds.name} {split}"))
    console.print(f"{metrics['num_images']} images, {how}", highlight=False)
    out_dir = out if out is not None else checkpoint.parent
    settings = {
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": file_sha256(checkpoint),
        "data": str(data),
        "split": split,
        "mode": mode,
        "scales": list(scale_list),
        "flip": flip,
        "crop": list(crop_hw) if crop_hw else None,
        "stride": list(stride_hw) if stride_hw else None,
        "limit": limit,
        "amp": amp,
        "device": str(dev),
        "torch": torch.__version__,
    }
    # eval_<split>.json, not eval.json: the trainer's eval.json (best epoch) next to best.pt must survive
    json_path = out_dir / f"eval_{split}.json"
    write_eval_json(json_path, metrics, ds.class_names, {"settings": settings})
    where = f"; predictions in {save_predictions}" if save_predictions is not None else ""
    console.print(f"[green]done[/]: mIoU {100 * metrics['miou']:.2f} in {metrics['seconds']:.1f}s → {json_path}{where}")
