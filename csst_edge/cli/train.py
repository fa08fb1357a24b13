"""`csst-edge train`: a teacher or student from a YAML config plus `key=value` overrides."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from csst_edge.cli.common import Quiet, console, out_option
from csst_edge.sizes import parse_hw

_HELP = {  # help texts too long to stand on their option's line, by parameter name
    "overrides": "key=value overrides, e.g. epochs=50 optim.lr=0.02",
    "data": "Labelled dataset YAML or built-in name; replaces the config's train sources.",
    "schedule": "Crop schedule: constant, coarse2fine, fine2coarse, coarse2fine+, fine2coarse+.",
    "print_config": "Print the resolved config (defaults < CONFIG < options < key=value) as YAML and exit; the output "
    "is itself a config file.",
}


def train_command(
    config: Annotated[Path | None, typer.Argument(help="Training config YAML (see csst_edge/configs/train/).")] = None,
    overrides: Annotated[list[str] | None, typer.Argument(help=_HELP["overrides"])] = None,
    model: Annotated[str | None, typer.Option(help="Model name (see `csst-edge train --list-models`).")] = None,
    data: Annotated[str | None, typer.Option(help=_HELP["data"])] = None,
    val: Annotated[str | None, typer.Option(help="Validation dataset YAML or built-in name (split 'val').")] = None,
    epochs: Annotated[int | None, typer.Option(help="Number of epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Global batch size at the base crop.")] = None,
    crop: Annotated[str | None, typer.Option(help="Base crop HxW, e.g. 512x512.")] = None,
    schedule: Annotated[str | None, typer.Option(help=_HELP["schedule"])] = None,
    sampling: Annotated[str | None, typer.Option(help="random or centroid.")] = None,
    out: Annotated[Path | None, out_option("Run directory (config.yaml, metrics.jsonl, last.pt, best.pt).")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/last.pt when it exists.")] = True,
    list_models: Annotated[bool, typer.Option("--list-models", help="List the registered models and exit.")] = False,
    print_config: Annotated[bool, typer.Option("--print-config", help=_HELP["print_config"])] = False,
    quiet: Quiet = False,
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
        _print_models()
        raise typer.Exit()
    overrides = list(overrides or [])
    if config is not None and "=" in str(config) and not config.is_file():  # no config file, only overrides
        overrides.insert(0, str(config))
        config = None
    cfg = load_train_config(config, _option_overrides(locals()) + overrides)
    if print_config:
        typer.echo(dump_config(cfg), nl=False)  # plain text: rich would wrap long lines and eat [brackets]
        raise typer.Exit()
    from csst_edge.train.trainer import train

    result = train(cfg, resume=resume, progress=not quiet, console=console)
    best = f"{100 * result.best_miou:.2f}" if result.best_miou is not None else "n/a (no val set)"
    console.print(f"[green]done[/]: {result.epochs_run} epoch(s), best val mIoU {best}; run directory {result.run_dir}")


def _print_models() -> None:
    from csst_edge.models import list_models as registered

    for kind in ("student", "teacher"):
        console.print(f"[bold]{kind}s:[/] " + ", ".join(registered(kind)))


# options that are config keys of the same meaning (--schedule is the config's crop_schedule)
_CONFIG_KEYS = {
    "model": "model",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "schedule": "crop_schedule",
    "sampling": "sampling",
    "out": "out",
    "device": "device",
}


def _option_overrides(params: dict) -> list[str]:
    """The options given, as key=value overrides: they sit between the config file and the key=value arguments."""
    extra = [f"{key}={params[name]}" for name, key in _CONFIG_KEYS.items() if params[name] is not None]
    if params["crop"] is not None:
        h, w = parse_hw(params["crop"], "--crop")
        extra.append(f"crop=[{h},{w}]")
    if params["data"] is not None:  # JSON: any path quotes safely
        extra.append("train=" + json.dumps([{"data": str(params["data"]), "split": "train"}]))
    if params["val"] is not None:
        extra.append("val=" + json.dumps({"data": str(params["val"]), "split": "val"}))
    return extra
