"""`csst-edge train`: a teacher or student from a YAML config plus `key=value` overrides."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from csst_edge.cli.common import console
from csst_edge.sizes import parse_hw


def train_command(
    config: Annotated[Path | None, typer.Argument(help="Training config YAML (see csst_edge/configs/train/).")] = None,
    overrides: Annotated[
        list[str] | None, typer.Argument(help="key=value overrides, e.g. epochs=50 optim.lr=0.02")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model name (see `csst-edge train --list-models`).")] = None,
    data: Annotated[
        str | None, typer.Option(help="Labelled dataset YAML or built-in name; replaces the config's train sources.")
    ] = None,
    val: Annotated[str | None, typer.Option(help="Validation dataset YAML or built-in name (split 'val').")] = None,
    epochs: Annotated[int | None, typer.Option(help="Number of epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Global batch size at the base crop.")] = None,
    crop: Annotated[str | None, typer.Option(help="Base crop HxW, e.g. 512x512.")] = None,
    schedule: Annotated[
        str | None, typer.Option(help="Crop schedule: constant, coarse2fine, fine2coarse, coarse2fine+, fine2coarse+.")
    ] = None,
    sampling: Annotated[str | None, typer.Option(help="random or centroid.")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run directory (config.yaml, metrics.jsonl, last.pt, best.pt).")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/last.pt when it exists.")] = True,
    list_models: Annotated[bool, typer.Option("--list-models", help="List the registered models and exit.")] = False,
    print_config: Annotated[
        bool,
        typer.Option(
            "--print-config",
            help="Print the resolved config (defaults < CONFIG < options < key=value) as YAML and exit; the output "
            "is itself a config file.",
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train a teacher or student.

    Examples:

      csst-edge train csst_edge/configs/train/camvid_fastscnn.yaml epochs=50

      csst-edge train --model deeplabv3plus_r18 --data camvid --val camvid --epochs 80 --crop 360x480 --out runs/teacher

      torchrun --nproc_per_node 2 -m csst_edge train cfg.yaml        # DDP (gloo on CPU, NCCL on GPUs)

      csst-edge train cfg.yaml logger=tensorboard,mlflow             # also to TensorBoard and MLflow (./mlruns)

      csst-edge train --print-config cfg.yaml epochs=20 > run.yaml   # the resolved config, nothing trained
    """
    from csst_edge.train.config import dump_config, load_train_config

    if list_models:
        from csst_edge.models import list_models as registered

        for kind in ("student", "teacher"):
            console.print(f"[bold]{kind}s:[/] " + ", ".join(registered(kind)))
        raise typer.Exit()
    options = {
        "model": model,
        "epochs": epochs,
        "batch_size": batch_size,
        "crop_schedule": schedule,
        "sampling": sampling,
        "out": out,
        "device": device,
    }
    extra = [f"{k}={v}" for k, v in options.items() if v is not None]
    if crop is not None:
        h, w = parse_hw(crop, "--crop")
        extra.append(f"crop=[{h},{w}]")
    if data is not None:
        extra.append("train=" + json.dumps([{"data": str(data), "split": "train"}]))  # JSON: any path quotes safely
    if val is not None:
        extra.append("val=" + json.dumps({"data": str(val), "split": "val"}))
    overrides = list(overrides or [])
    if config is not None and "=" in str(config) and not config.is_file():  # no config file, only overrides
        overrides.insert(0, str(config))
        config = None
    cfg = load_train_config(config, extra + overrides)
    if print_config:
        typer.echo(dump_config(cfg), nl=False)  # plain text: rich would wrap long lines and eat [brackets]
        raise typer.Exit()
    from csst_edge.train.trainer import train

    result = train(cfg, resume=resume, progress=not quiet, console=console)
    best = f"{100 * result.best_miou:.2f}" if result.best_miou is not None else "n/a (no val set)"
    console.print(f"[green]done[/]: {result.epochs_run} epoch(s), best val mIoU {best}; run directory {result.run_dir}")
