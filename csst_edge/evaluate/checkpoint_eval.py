"""A checkpoint on a dataset split: the single-scale mIoU the demo, the round gate, few-shot runs and the benchmarks
compare (`evaluate_checkpoint`), and the full evaluation of `csst-edge eval` (`run_eval`: test-time augmentation,
sliding windows, torchrun sharding, eval_<split>.json). Both go through one chain: checkpoint, normalisation,
dataset, DataLoader, `evaluate`."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from csst_edge import storage
from csst_edge.data.selection import SourceConfig
from csst_edge.errors import CheckpointError, ConfigError
from csst_edge.evaluate.dataset import collate_eval, eval_dataset
from csst_edge.evaluate.evaluator import evaluate
from csst_edge.models.checkpoint import load_checkpoint, model_from_checkpoint, normalization
from csst_edge.models.device import resolve_device


@dataclass
class EvalSettings:
    data: str | None = None  # dataset YAML or built-in name; None: the validation set the checkpoint's config names
    split: str = "val"
    mode: str = "single"  # single | multiscale (average over `scales`) | slide (sliding `crop` window)
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False  # also average with the horizontally flipped prediction
    crop: tuple[int, int] | None = None  # sliding window (mode slide)
    stride: tuple[int, int] | None = None  # sliding-window stride (default: 2/3 of the window)
    batch_size: int = 1  # images per forward pass (they must share one size)
    workers: int = 2  # DataLoader decoding workers
    device: str = "auto"
    amp: bool = False  # fp16 on CUDA, bf16 on CPU
    save_predictions: Path | None = None  # a folder for coloured <name>.png predictions
    limit: int | None = None  # only the first N images of the split
    progress: bool = True


@dataclass
class EvalRun:
    """What `run_eval` measured, on the main rank: the metrics `evaluate` returns and where they were written."""

    metrics: dict
    class_names: list[str]
    dataset_name: str
    json_path: Path


@dataclass
class _Evaluated:
    metrics: dict
    dataset: object  # the eval_dataset info: name, class_names, palette, ...
    data: str
    device: torch.device


def evaluate_checkpoint(
    checkpoint: Path, data, split: str, device: str = "auto", workers: int = 2, per_image: bool = False
):
    """Single-scale mIoU of a checkpoint on a dataset split. Returns (metrics, class_names); with `per_image`,
    metrics also hold `per_image_confusion` (numpy N×C×C, in the split's fixed order) and the image `names`,
    which the round gate's paired bootstrap needs (drop them before writing metrics to JSON)."""
    # never the torchrun group: a trainer or the round may call this between collectives of its own
    dev = resolve_device(device)
    settings = EvalSettings(data=str(data), split=split, workers=workers, device=device, progress=False)
    done = _evaluate(_Loaded.read(checkpoint, settings), settings, dev, per_image=per_image)
    metrics = done.metrics
    result = {
        "miou": metrics["miou"],
        "per_class_iou": [None if v != v else v for v in metrics["per_class_iou"]],
        "pixel_accuracy": metrics["pixel_accuracy"],
    }
    if per_image:
        result["per_image_confusion"] = metrics["per_image_confusion"]
        result["names"] = metrics["names"]
    return result, done.dataset.class_names


def run_eval(
    checkpoint: Path, settings: EvalSettings, out_dir: Path | None = None, console=None, ranks=None
) -> EvalRun | None:
    """Evaluate a checkpoint file as `settings` say and write `out_dir`/eval_<split>.json (default: next to the
    checkpoint) with the metrics and the settings.

    `ranks`: how this process joins the other ranks of a torchrun launch: a function from the device name to a
    context manager giving (rank info with rank / world_size / enabled / is_main, this rank's device) and leaving
    the group at the end. The caller passes it (`csst-edge eval` builds it on train.distributed, a layer above
    this one); without it the evaluation is one process. With several ranks every rank takes every
    world_size-th image and the confusion matrices are summed; only the main rank writes, the others get None."""
    loaded = _Loaded.read(checkpoint, settings)  # first: names a missing / unreadable file before anything else
    with (ranks or _one_process)(settings.device) as (info, dev):
        done = _evaluate(loaded, settings, dev, shard=info if info.enabled else None, console=console)
    if not info.is_main:
        return None
    return _write_eval_json(checkpoint, settings, done, out_dir if out_dir is not None else checkpoint.parent)


@contextmanager
def _one_process(device: str):
    """No torchrun group: rank 0 of 1, on the one device rule's device."""
    yield _Alone(), resolve_device(device)


@dataclass(frozen=True)
class _Alone:
    enabled: bool = False
    is_main: bool = True


@dataclass
class _Loaded:
    """A checkpoint's model and state, and the dataset it is evaluated on."""

    where: str  # the checkpoint, as errors name it
    model: torch.nn.Module
    state: dict
    data: str

    @classmethod
    def read(cls, checkpoint, settings: EvalSettings) -> _Loaded:
        where = storage.redact(checkpoint)
        state = load_checkpoint(checkpoint)
        try:
            model, state = model_from_checkpoint(state)
        except CheckpointError as e:  # loaded from a dict, the message says 'checkpoint'; name the file instead
            raise CheckpointError(f"{where}: {str(e).removeprefix('checkpoint: ')}") from None
        data = settings.data or ((state.get("config") or {}).get("val") or {}).get("data")
        if not data:
            raise ConfigError(f"--data: {where} records no validation set; name a dataset YAML or built-in name")
        return cls(where, model, state, str(data))


# the settings `evaluate` takes under the same names
_EVALUATE_OPTIONS = ("progress", "mode", "scales", "flip", "crop", "stride", "amp", "save_predictions")


def _evaluate(loaded: _Loaded, settings: EvalSettings, dev, per_image: bool = False, shard=None, console=None):
    """The one chain after the checkpoint: its normalisation, the dataset, a DataLoader (`shard`: this rank's
    images only), `evaluate`."""
    mean, std = normalization(loaded.state)
    source = SourceConfig(data=loaded.data, split=settings.split, limit=settings.limit)
    dataset, ds = eval_dataset(source, mean, std)
    if ds.num_classes != int(loaded.state["num_classes"]):
        raise ConfigError(
            f"{loaded.where}: model has {loaded.state['num_classes']} classes, dataset {loaded.data} has "
            f"{ds.num_classes}"
        )
    if shard is not None:
        dataset = Subset(dataset, range(shard.rank, len(dataset), shard.world_size))
    loader = DataLoader(
        dataset,
        batch_size=settings.batch_size,
        num_workers=settings.workers,
        collate_fn=collate_eval,
        pin_memory=dev.type == "cuda",
    )
    same_named = {name: getattr(settings, name) for name in _EVALUATE_OPTIONS}
    metrics = evaluate(
        loaded.model.to(dev),
        loader,
        ds.num_classes,
        dev,
        ignore_index=ds.ignore_index,
        palette=ds.palette,
        sharded=shard is not None,
        console=console,
        per_image=per_image,
        **same_named,
    )
    return _Evaluated(metrics, ds, loaded.data, dev)


def _write_eval_json(checkpoint: Path, settings: EvalSettings, done: _Evaluated, out_dir: Path) -> EvalRun:
    from csst_edge.evaluate.report import write_eval_json
    from csst_edge.fileio import file_sha256

    recorded = {
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": file_sha256(checkpoint),
        "data": done.data,
        "split": settings.split,
        "mode": settings.mode,
        "scales": list(settings.scales),
        "flip": settings.flip,
        "crop": list(settings.crop) if settings.crop else None,
        "stride": list(settings.stride) if settings.stride else None,
        "limit": settings.limit,
        "amp": settings.amp,
        "device": str(done.device),
        "torch": torch.__version__,
    }
    # eval_<split>.json, not eval.json: the trainer's eval.json (best epoch) next to best.pt must survive
    json_path = out_dir / f"eval_{settings.split}.json"
    write_eval_json(json_path, done.metrics, done.dataset.class_names, {"settings": recorded})
    return EvalRun(done.metrics, list(done.dataset.class_names), done.dataset.name, json_path)
