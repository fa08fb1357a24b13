"""Few-shot transfer to a new domain: a trained model finetuned on k labelled target images (k = 1, 2, 5, 10).

The k images are a seeded permutation of the target's name-sorted train split, cut at k, so the sets are nested
(the k=1 image is in the k=2 set, ...) and the comparison across k measures data, not a lucky draw. They are
chosen by `SourceConfig.shots` / `shots_seed`, i.e. by the training config itself, so every run directory's
config.yaml says exactly which images it saw and `csst-edge train method=fewshot train.0.shots=5 ...` reproduces
one row of the table.

Each run starts from the checkpoint through `csst_edge.train.finetune.load_for_finetune`: when the target has
another class count (19 Cityscapes classes -> 66 Mapillary ones) the classifier layers keep their fresh
initialisation, everything else is loaded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from csst_edge.data.dataset import list_samples, load_dataset_config
from csst_edge.data.selection import sample_name, select_shots
from csst_edge.errors import ConfigError
from csst_edge.evaluate.checkpoint_eval import evaluate_checkpoint
from csst_edge.fileio import atomic_write_json, atomic_write_text, file_sha256
from csst_edge.models import create_model
from csst_edge.models.checkpoint import load_checkpoint
from csst_edge.train.config import config_to_dict, parse_overrides, train_config_from_dict
from csst_edge.train.finetune import load_for_finetune
from csst_edge.train.trainer import train

RESULT_JSON = "finetune.json"
RESULT_MD = "finetune.md"
DONE_NAME = "fewshot.json"  # per-k marker; not eval.json, which the trainer writes itself when a val set is given


# ------------------------------------------------------------------------------------------------ shots
def parse_shots(text: str | Sequence[int]) -> tuple[int, ...]:
    """ "1,2,5,10" -> (1, 2, 5, 10): sorted, unique, positive."""
    items = text.replace(" ", "").split(",") if isinstance(text, str) else list(text)
    try:
        shots = sorted({int(v) for v in items if str(v) != ""})
    except ValueError:
        raise ConfigError(f"--shots '{text}' must be comma-separated positive integers, e.g. 1,2,5,10") from None
    if not shots or shots[0] < 1:
        raise ConfigError(f"--shots '{text}' must be comma-separated positive integers, e.g. 1,2,5,10")
    return tuple(shots)


# ------------------------------------------------------------------------------------------------ runs
def run_finetune(
    checkpoint: str | os.PathLike,
    data: str | os.PathLike,
    shots: Sequence[int] = (1, 2, 5, 10),
    epochs: int = 50,
    out: str | os.PathLike = "runs/finetune",
    seed: int = 0,
    *,
    batch_size: int = 8,
    crop: tuple[int, int] = (512, 512),
    lr: float = 0.01,
    device: str = "auto",
    overrides: Sequence[str] = (),
    train_split: str = "train",
    val_split: str = "val",
    samples_per_epoch: int | None = None,
    progress: bool = True,
    console=None,
) -> dict:
    """One few-shot run per k in `out/k<k>`, each evaluated on the target's val split; writes finetune.json/.md.

    Resumable: a k whose run finished (its `fewshot.json` exists with the same resolved config) is skipped, a
    killed one resumes from its `last.pt`. Every k trains for the same number of samples per epoch (default:
    max(shots) rounded up to whole batches), so the table compares how many labelled images were seen, not how
    many steps. The val split is only evaluated once at the end (last.pt): choosing the best epoch on it would
    tune on the test images.
    """
    shots = parse_shots(shots)
    out = Path(out)
    checkpoint = Path(checkpoint)
    state = load_checkpoint(checkpoint)
    arch, model_kwargs = str(state["arch"]), dict(state.get("model_kwargs") or {})
    ds = load_dataset_config(data)
    pool = list_samples(ds, train_split)
    where = f"{data} split '{train_split}'"
    images = {k: [sample_name(s) for s in select_shots(pool, k, seed, where=where)] for k in shots}
    list_samples(ds, val_split)  # fail now, not after the first run, when there is nothing to evaluate on

    # a dry load validates the checkpoint against the target's class count before any training
    replaced = load_for_finetune(
        create_model(arch, ds.num_classes, **model_kwargs), state, arch=arch, source=str(checkpoint)
    )
    src_names = [str(n) for n in state.get("class_names") or []]
    same_classes = src_names == list(ds.class_names)
    ckpt_hash = file_sha256(checkpoint)
    if samples_per_epoch is None:
        samples_per_epoch = -(-max(shots) // batch_size) * batch_size
    h, w = crop
    say = console.print if console is not None else (lambda *a, **k: None)

    report: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": ckpt_hash,
        "arch": arch,
        "data": str(data),
        "train_split": train_split,
        "val_split": val_split,
        "seed": seed,
        "epochs": epochs,
        "source_classes": int(state["num_classes"]),
        "target_classes": ds.num_classes,
        "head_replaced": bool(replaced),
        "replaced_keys": replaced,
        "zero_shot": None,
        "rows": [],
    }
    out.mkdir(parents=True, exist_ok=True)

    if same_classes:
        # the checkpoint itself on the target: the k=0 row (meaningless when the classes differ)
        zs_path = out / "zero_shot.json"
        zs = json.loads(zs_path.read_text()) if zs_path.is_file() else None
        if not zs or zs.get("checkpoint_sha256") != ckpt_hash or zs.get("data") != str(data):
            say(f"zero-shot: evaluating {checkpoint} on {data} ({val_split})")
            metrics, _ = evaluate_checkpoint(checkpoint, data, val_split, device=device, workers=0)
            zs = {"checkpoint_sha256": ckpt_hash, "data": str(data), **metrics}
            atomic_write_json(zs_path, zs)
        report["zero_shot"] = {"miou": zs["miou"], "pixel_accuracy": zs["pixel_accuracy"]}

    for k in shots:
        run_dir = out / f"k{k}"
        source = {"data": str(data), "split": train_split, "shots": k, "shots_seed": seed}
        recipe = {
            "model": arch,
            "model_kwargs": model_kwargs,
            "method": "fewshot",
            "pretrained": str(checkpoint),
            "train": [source],
            "val": None,
            "epochs": epochs,
            "batch_size": batch_size,
            "crop": [h, w],
            "optim": {"lr": lr},
            "samples_per_epoch": samples_per_epoch,
            "seed": seed,
            "device": device,
        }
        cfg = train_config_from_dict(recipe, {**parse_overrides(list(overrides)), "out": str(run_dir)})
        workers = min(cfg.workers, 2)
        resolved = _comparable(config_to_dict(cfg))
        done_path = run_dir / DONE_NAME
        done = json.loads(done_path.read_text()) if done_path.is_file() else None
        if done is not None and (done.get("config") != resolved or done.get("checkpoint_sha256") != ckpt_hash):
            raise ConfigError(
                f"{done_path}: this k finished with other settings or another checkpoint; "
                f"use a new --out (or delete {run_dir}) to rerun it"
            )
        if done is None:
            say(f"[bold]k={k}[/]: {len(images[k])} labelled image(s) -> {run_dir}")
            train(cfg, resume=True, progress=progress, console=console)
            metrics, _ = evaluate_checkpoint(run_dir / "last.pt", data, val_split, device=cfg.device, workers=workers)
            done = {
                "k": k,
                "images": images[k],
                "miou": metrics["miou"],
                "pixel_accuracy": metrics["pixel_accuracy"],
                "per_class_iou": dict(zip(ds.class_names, metrics["per_class_iou"], strict=True)),
                "checkpoint": str(run_dir / "last.pt"),
                "checkpoint_sha256": ckpt_hash,
                "config": resolved,
            }
            atomic_write_json(done_path, done)
        else:
            say(f"k={k}: finished earlier (mIoU {100 * done['miou']:.1f}), skipped")
        report["rows"].append(
            {
                "k": k,
                "images": done["images"],
                "miou": done["miou"],
                "pixel_accuracy": done["pixel_accuracy"],
                "run_dir": str(run_dir),
            }
        )
        # written after every k so a long sweep shows its progress and a kill loses nothing already measured
        atomic_write_json(out / RESULT_JSON, report)
        atomic_write_text(out / RESULT_MD, finetune_markdown(report))
    return report


def _comparable(cfg: dict) -> dict:
    """The resolved config minus what may change between reruns without changing the result."""
    return {k: v for k, v in cfg.items() if k not in ("device", "workers", "out")}


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def finetune_markdown(report: dict) -> str:
    head = (
        ("replaced (" + ", ".join(f"`{k}`" for k in report["replaced_keys"]) + ")")
        if report["head_replaced"]
        else "kept (same class count)"
    )
    lines = [
        "# Few-shot transfer",
        "",
        f"Checkpoint `{report['checkpoint']}` ({report['arch']}, {report['source_classes']} classes) -> "
        f"`{report['data']}` ({report['target_classes']} classes); classifier head {head}. "
        f"mIoU on split `{report['val_split']}`, shots drawn with seed {report['seed']}, "
        f"{report['epochs']} epochs.",
        "",
        "| k | labelled images | mIoU | pixel acc. |",
        "|---:|---|---:|---:|",
    ]
    if report.get("zero_shot"):
        zs = report["zero_shot"]
        lines.append(f"| 0 (zero-shot) | - | {_pct(zs['miou'])} | {_pct(zs['pixel_accuracy'])} |")
    for row in report["rows"]:
        names = ", ".join(row["images"]) if len(row["images"]) <= 10 else f"{len(row['images'])} images"
        lines.append(f"| {row['k']} | {names} | {_pct(row['miou'])} | {_pct(row['pixel_accuracy'])} |")
    return "\n".join(lines) + "\n"


def rich_table(report: dict):
    from rich.table import Table

    title = (
        f"few-shot {report['arch']} -> {report['data']} "
        f"({report['source_classes']} -> {report['target_classes']} classes, head "
        f"{'replaced' if report['head_replaced'] else 'kept'})"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("k", justify="right")
    table.add_column("mIoU", justify="right")
    table.add_column("pixel acc.", justify="right")
    table.add_column("run")
    if report.get("zero_shot"):
        zs = report["zero_shot"]
        table.add_row("0 (zero-shot)", _pct(zs["miou"]), _pct(zs["pixel_accuracy"]), report["checkpoint"])
    for row in report["rows"]:
        table.add_row(str(row["k"]), _pct(row["miou"]), _pct(row["pixel_accuracy"]), row["run_dir"])
    return table
