"""`csst-edge finetune`: few-shot transfer of a trained model to a new domain (k labelled target images)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from csst_edge.cli.common import Device, QuietBars, console, out_option
from csst_edge.sizes import parse_hw

_HELP = {  # help texts too long to stand on their option's line, by parameter name
    "checkpoint": "Trained checkpoint (best.pt / last.pt of `csst-edge train`).",
    "data": "Target dataset YAML or built-in name: shots from its train split, mIoU on its val split.",
    "overrides": "Training config key=value overrides, e.g. workers=0",
    "shots": "Comma-separated k values: one run per k labelled target images.",
    "epochs": "Epochs per run (every k gets the same samples per epoch).",
    "out": "Output folder: k<k>/ run directories, finetune.json, finetune.md.",
}


def finetune_command(
    checkpoint: Annotated[Path, typer.Argument(help=_HELP["checkpoint"])],
    data: Annotated[str, typer.Option(help=_HELP["data"])],
    overrides: Annotated[list[str] | None, typer.Argument(help=_HELP["overrides"])] = None,
    shots: Annotated[str, typer.Option(help=_HELP["shots"])] = "1,2,5,10",
    epochs: Annotated[int, typer.Option(help=_HELP["epochs"])] = 50,
    batch_size: Annotated[int, typer.Option(help="Global batch size.")] = 8,
    crop: Annotated[str, typer.Option(help="Training crop HxW, e.g. 512x512.")] = "512x512",
    lr: Annotated[float, typer.Option(help="Base learning rate (poly schedule).")] = 0.01,
    out: Annotated[Path, out_option(_HELP["out"])] = Path("runs/finetune"),
    device: Device = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the shot selection and of training.")] = 0,
    quiet: QuietBars = False,
) -> None:
    """Few-shot finetuning on a new domain, with a new classifier head when the class count differs.

    The k images are drawn deterministically from the target's train split (a seeded permutation, nested: the
    k=1 image is in the k=2 set). Each k trains in OUT/k<k>/ (rerunning skips finished k and resumes a killed
    one), is evaluated on the target's val split, and the table k -> mIoU (plus the checkpoint's own zero-shot
    mIoU when the class sets match) goes to OUT/finetune.json and OUT/finetune.md.

    Examples:

      csst-edge finetune runs/student/best.pt --data synth_cityB --shots 1,2,5,10 --epochs 30 --crop 128x256

      csst-edge finetune runs/cityscapes_student/best.pt --data mapillary.yaml --out runs/fewshot_mapillary

      csst-edge finetune best.pt --data target.yaml --shots 5 optim.momentum=0.8 augment.blur=0 workers=0
    """
    from csst_edge.pipeline.fewshot import parse_shots, rich_table, run_finetune

    h, w = parse_hw(crop, "--crop")
    report = run_finetune(
        checkpoint,
        data,
        shots=parse_shots(shots),
        epochs=epochs,
        out=out,
        seed=seed,
        batch_size=batch_size,
        crop=(h, w),
        lr=lr,
        device=device,
        overrides=list(overrides or []),
        progress=not quiet,
        console=console,
    )
    console.print(rich_table(report))
    console.print(f"[green]done[/]: {out / 'finetune.json'}, {out / 'finetune.md'}")
