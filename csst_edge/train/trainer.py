"""The training loop, torchvision-references style: `train_one_epoch`, `evaluate`, `train` (main).

Resumable: `last.pt` is written atomically after every epoch with model, optimizer, scaler, iteration and the
RNG states, and the data order is a pure function of (seed, epoch), so a killed run resumed from `last.pt`
ends in the same state as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as tdist
from torch.utils.data import DataLoader

from csst_edge.data.transforms import train_transforms
from csst_edge.errors import ConfigError, TrainingDivergedError
from csst_edge.evaluate.dataset import collate_eval, eval_dataset
from csst_edge.fileio import atomic_write_json, atomic_write_text
from csst_edge.models import create_model
from csst_edge.models.checkpoint import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    clean_state_dict,
    load_checkpoint,
    save_checkpoint,
)
from csst_edge.progress import progress_bar
from csst_edge.train.config import TrainConfig, config_to_dict, dump_config
from csst_edge.train.data import (
    EpochBatches,
    EpochPlanner,
    TrainDataset,
    TrainSet,
    build_train_set,
    sampling_groups,
    shard_batches,
)
from csst_edge.train.distributed import DistInfo, barrier, cleanup, setup_distributed
from csst_edge.train.finetune import load_for_finetune
from csst_edge.train.loggers import Loggers, check_logger_packages, open_loggers
from csst_edge.train.losses import SegLoss, SoftCrossEntropy, build_criterion, model_regularizer
from csst_edge.train.schedules import CropSchedule


@dataclass
class TrainResult:
    run_dir: Path
    best_miou: float | None
    last_metrics: dict
    epochs_run: int


def poly_lr(base_lr: float, it: int, total: int, power: float, warmup_iters: int, warmup_ratio: float) -> float:
    if warmup_iters and it < warmup_iters:
        return base_lr * (warmup_ratio + (1 - warmup_ratio) * it / warmup_iters)
    return base_lr * (1 - min(it, total - 1) / total) ** power


def build_index_for(group_ids: np.ndarray, train_set: TrainSet, cfg: TrainConfig, cache: Path, progress: bool):
    """Centroid index over a group's label files, cached in the run directory and updated incrementally."""
    from csst_edge.data.centroids import build_or_update_index

    files = [train_set.entries[i].label for i in group_ids]
    luts = [train_set.luts[train_set.entries[i].lut_id] for i in group_ids]
    index, _ = build_or_update_index(
        files,
        train_set.num_classes,
        train_set.ignore_index,
        cfg.min_area,
        luts=luts,
        previous=cache,
        workers=cfg.workers,
        progress=progress,
    )
    index.save(cache)
    return index


def centroid_indexes(train_set: TrainSet, cfg: TrainConfig, run_dir: Path, dist: DistInfo, progress: bool):
    """Per sampling group, the centroid index (None without centroid sampling). Rank 0 builds or incrementally
    updates the cached indexes; the other ranks wait and load them."""
    if cfg.sampling != "centroid":
        return None
    from csst_edge.data.centroids import CentroidIndex

    groups = sampling_groups(train_set, cfg.real_fraction, cfg.real_only_tail)
    if dist.is_main:
        indexes = {
            g: build_index_for(ids, train_set, cfg, run_dir / f"centroids_{g}.npz", progress)
            for g, ids in groups.items()
        }
    barrier(dist)
    if not dist.is_main:
        indexes = {g: CentroidIndex.load(run_dir / f"centroids_{g}.npz") for g in groups}
    return indexes


def build_model(cfg: TrainConfig, train_set: TrainSet, device, dist: DistInfo):
    """The model on `device`, with the normalisation its pretrained weights expect (ImageNet's unless the model
    says otherwise). Methods that continue a checkpoint start from it; SyncBN under DDP on CUDA."""
    model = create_model(cfg.model, train_set.num_classes, pretrained=_model_pretrained(cfg), **cfg.model_kwargs)
    mean = tuple(getattr(model, "input_mean", IMAGENET_MEAN))
    std = tuple(getattr(model, "input_std", IMAGENET_STD))
    if cfg.method in ("finetune", "consistency", "fewshot"):
        _init_from_checkpoint(model, cfg.pretrained, cfg)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    if dist.enabled and cfg.sync_bn and device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model, mean, std


def checkpoint_meta(cfg: TrainConfig, train_set: TrainSet, mean, std) -> dict:
    return dict(
        arch=cfg.model,
        model_kwargs=dict(cfg.model_kwargs),
        num_classes=train_set.num_classes,
        class_names=train_set.class_names,
        palette=[list(c) for c in train_set.palette],
        ignore_index=train_set.ignore_index,
        mean=list(mean),
        std=list(std),
        config=config_to_dict(cfg),
    )


def train(
    cfg: TrainConfig, resume: bool = True, progress: bool = True, console=None, stop_after_epochs: int | None = None
) -> TrainResult:
    """Train a teacher or student as `cfg` says. Rank 0 writes the run directory.

    `stop_after_epochs` ends this invocation early (e.g. to fit a job's time slot); rerunning resumes.
    """
    dist, device = setup_distributed(cfg.device)
    _check_setup(cfg, dist, device)
    run_dir = Path(cfg.out)
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)

    train_set = build_train_set(cfg.train)
    planner = EpochPlanner(train_set, cfg, centroid_indexes(train_set, cfg, run_dir, dist, progress))
    schedule = CropSchedule(
        cfg.crop_schedule, tuple(cfg.crop), cfg.batch_size, cfg.epochs, tuple(cfg.crop_scales), max_batch=cfg.max_batch
    )
    total_iters = sum(planner.iterations(schedule.at(e).batch_size) for e in range(cfg.epochs))
    model, mean, std = build_model(cfg, train_set, device, dist)
    soft_k = _soft_k(train_set) if cfg.method == "soft" else 0
    objective = build_objective(cfg, model, train_set.ignore_index, soft_k)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum, weight_decay=cfg.optim.weight_decay
    )
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16")
    state = TrainState(model, optimizer, scaler, checkpoint_meta(cfg, train_set, mean, std))
    resumed = resume and resume_checkpoint(run_dir / "last.pt", state)
    if resumed and console and dist.is_main:
        console.print(f"resuming {run_dir / 'last.pt'} after epoch {state.epoch + 1} (iteration {state.iteration})")
    step_model = _wrap_for_training(model, cfg, dist, device)
    loader = build_train_loader(train_set, cfg, soft_k, mean, std, device)
    val_loader = _val_loader(cfg, mean, std) if cfg.val is not None and dist.is_main else None

    start_epoch = state.epoch + 1
    end_epoch = cfg.epochs if stop_after_epochs is None else min(cfg.epochs, start_epoch + stop_after_epochs)
    last_metrics: dict = {}
    bar_ctx = progress_bar("it", console, extra_field=True) if progress and dist.is_main else contextlib.nullcontext()
    loggers = open_loggers(cfg, run_dir, state.iteration if resumed else None) if dist.is_main else Loggers([])
    for where in (logger.where for logger in loggers.loggers if logger.where and console):
        console.print(f"logging to {where}")
    with loggers, bar_ctx as bar:
        loggers.log_config(config_to_dict(cfg))
        task = bar.add_task("train", total=total_iters, completed=state.iteration, info="") if bar else None
        for epoch in range(start_epoch, end_epoch):
            ec = schedule.at(epoch)
            batches = shard_batches(planner.plan(epoch, ec.batch_size), dist.rank, dist.world_size)
            labels = None
            if cfg.method == "consistency":
                labels = refresh_online_labels(model, train_set, run_dir, epoch, cfg, device, mean, std, dist)
            loader.batch_sampler.set_epoch(batches, (ec.crop_h, ec.crop_w), labels)
            lr_at = partial(_scaled_poly_lr, cfg.optim, total_iters, ec.lr_scale)
            on_step = _step_reporter(cfg, loggers, bar, task, ec) if dist.is_main else None
            t0 = time.perf_counter()
            stats = train_one_epoch(
                step_model, objective, optimizer, scaler, loader, device, cfg, epoch, state.iteration, lr_at, on_step
            )
            state.epoch, state.iteration = epoch, stats.pop("iteration")
            record = {"epoch": epoch, "iteration": state.iteration, "crop": [ec.crop_h, ec.crop_w]}
            record.update(batch_size=ec.batch_size, time_s=round(time.perf_counter() - t0, 3), **stats)
            if planner.real_only(epoch):
                record["real_only"] = True
            if dist.is_main:
                last_metrics = finish_epoch(state, record, val_loader, train_set, cfg, run_dir, device, loggers)
                if bar:
                    bar.update(task, info=_epoch_summary(record))
        if dist.enabled:
            loggers.log({"type": "ddp_check", **ranks_in_sync(model, dist, device)})
    cleanup(dist)
    return TrainResult(run_dir, state.best_miou, last_metrics, end_epoch - start_epoch)


@dataclass
class TrainState:
    """What a run carries from epoch to epoch and `last.pt` saves: enough to continue exactly where it stopped."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    meta: dict  # arch, classes, palette, normalisation, config: what a checkpoint needs to be used on its own
    epoch: int = -1  # the last finished epoch
    iteration: int = 0
    best_miou: float | None = None


def resume_checkpoint(path: Path, state: TrainState) -> bool:
    """Load `last.pt` into `state` (weights, optimizer, scaler, counters, torch RNG); False when there is none.

    The data order is a pure function of (seed, epoch), so with the RNG restored the resumed run continues the
    uninterrupted one exactly."""
    if not path.is_file():
        return False
    saved = load_checkpoint(path, map_location="cpu")
    state.model.load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    if saved.get("scaler"):
        state.scaler.load_state_dict(saved["scaler"])
    state.epoch, state.iteration = int(saved["epoch"]), int(saved["scheduler"]["iteration"])
    state.best_miou = (saved.get("metrics") or {}).get("best_miou")
    torch.set_rng_state(saved["rng"]["torch"])
    return True


def training_state(state: TrainState, metrics: dict) -> dict:
    """The checkpoint dict (docs/design.md section 3) of `state` after its last epoch, with `metrics`."""
    return {
        "model": {k: v.detach().cpu() for k, v in state.model.state_dict().items()},
        "optimizer": state.optimizer.state_dict(),
        "scheduler": {"iteration": state.iteration},
        "scaler": state.scaler.state_dict() if state.scaler.is_enabled() else None,
        "epoch": state.epoch,
        "metrics": _nan_to_none(metrics),
        "rng": {"torch": torch.get_rng_state()},
        **state.meta,
    }


def finish_epoch(
    state: TrainState, record: dict, val_loader, train_set: TrainSet, cfg: TrainConfig, run_dir: Path, device, loggers
) -> dict:
    """Rank 0 after every epoch: evaluate when due (a new best writes `best.pt` and `eval.json`), then save
    `last.pt` and log the epoch line. `record` gains the val metrics; returns the metrics saved in `last.pt`."""
    if val_loader is not None and ((state.epoch + 1) % cfg.eval_every == 0 or state.epoch + 1 == cfg.epochs):
        from csst_edge.evaluate import evaluate

        metrics = evaluate(
            state.model, val_loader, train_set.num_classes, device, ignore_index=train_set.ignore_index, progress=False
        )
        record.update(val_miou=metrics["miou"], val_pixel_accuracy=metrics["pixel_accuracy"])
        result = {
            "epoch": state.epoch,
            "miou": metrics["miou"],
            "pixel_accuracy": metrics["pixel_accuracy"],
            "per_class_iou": dict(zip(train_set.class_names, _nan_to_none(metrics["per_class_iou"]), strict=False)),
        }
        best = state.best_miou is None or metrics["miou"] > state.best_miou
        if best:
            state.best_miou = metrics["miou"]
            save_checkpoint(run_dir / "best.pt", training_state(state, {**record, "best_miou": state.best_miou}))
            atomic_write_json(run_dir / "eval.json", result)
        loggers.log_eval(result, state.iteration, best)
        state.model.train()
    last_metrics = {**record, "best_miou": state.best_miou}
    save_checkpoint(run_dir / "last.pt", training_state(state, last_metrics))
    loggers.log({"type": "epoch", **record})
    return last_metrics


@dataclass(frozen=True)
class Step:
    """One optimizer step, as `train_one_epoch` reports it to its `on_step` callback."""

    epoch: int
    iteration: int  # after the step
    loss: float
    lr: float
    img_per_s: float  # over the epoch so far, all ranks together
    parts: dict  # the loss terms (main, aux0, ..., mr) as floats


def train_one_epoch(
    model,
    objective,
    optimizer,
    scaler,
    loader,
    device,
    cfg: TrainConfig,
    epoch: int,
    iteration: int,
    lr_at,
    on_step=None,
) -> dict:
    """One pass over `loader`; `lr_at(iteration)` is the LR of each step, `on_step(Step)` is called after each.

    Returns the epoch's mean loss, last LR and speed, and the iteration count after it."""
    model.train()
    amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.amp)
    world_size = tdist.get_world_size() if tdist.is_available() and tdist.is_initialized() else 1
    loss_sum, seen, lr, t0 = 0.0, 0, None, time.perf_counter()
    for images, labels, *soft in loader:
        lr = lr_at(iteration)
        for group in optimizer.param_groups:
            group["lr"] = lr
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            outputs = model(images)
            loss, parts = objective(outputs, labels, [t.to(device, non_blocking=True) for t in soft])
        if not torch.isfinite(loss):
            raise TrainingDivergedError(
                f"loss became {loss.item()} at epoch {epoch}, iteration {iteration}: lower optim.lr"
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        iteration += 1
        value = loss.item()
        loss_sum += value * images.shape[0]
        seen += images.shape[0]
        if on_step is not None:
            ips = seen * world_size / (time.perf_counter() - t0)
            on_step(Step(epoch, iteration, value, lr, ips, {k: float(v) for k, v in parts.items()}))
    return {
        "iteration": iteration,
        "loss": round(loss_sum / max(1, seen), 5),
        "lr": lr,
        "img_per_s": round(seen * world_size / (time.perf_counter() - t0), 2),
    }


class TrainObjective:
    """The configured objective: hard CE/OHEM (+aux), with the main term swapped for soft CE (method soft) or
    the model regularizer added (method mr)."""

    def __init__(self, criterion: SegLoss, soft_criterion: SoftCrossEntropy | None, mr_weight: float | None):
        self.criterion, self.soft_criterion, self.mr_weight = criterion, soft_criterion, mr_weight

    def __call__(self, outputs, labels, soft=()):
        loss, parts = self.criterion(outputs, labels)
        main = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
        if self.soft_criterion is not None:
            ids, probs = soft
            soft_loss = self.soft_criterion(main, ids.clamp(max=main.shape[1] - 1), probs)
            loss = loss - parts["main"] + soft_loss
            parts = {**parts, "main": soft_loss.detach()}
        if self.mr_weight is not None:
            reg = model_regularizer(main, self.mr_weight)
            loss = loss + reg
            parts = {**parts, "mr": reg.detach()}
        return loss, parts


def build_objective(cfg: TrainConfig, model, ignore_index: int, soft_k: int) -> TrainObjective:
    criterion = build_criterion(
        cfg.loss.name, ignore_index=ignore_index, thresh=cfg.loss.ohem_thresh, min_kept=cfg.loss.ohem_min_kept
    )
    aux_weights = list(getattr(model, "aux_weights", [])) if cfg.loss.aux else []
    return TrainObjective(
        SegLoss(criterion, aux_weights),
        SoftCrossEntropy() if soft_k else None,
        cfg.mr_weight if cfg.method == "mr" else None,
    )


@torch.inference_mode()
def refresh_online_labels(
    model, train_set: TrainSet, run_dir: Path, epoch: int, cfg: TrainConfig, device, mean, std, dist: DistInfo
) -> dict[int, Path]:
    """Method `consistency`: the model relabels the pseudo entries with its own current predictions.

    Epoch 0 trains on the teacher's labels; every `refresh_every` epochs after that the labels are replaced.
    The files live in the run directory (written atomically), so a resumed run finds the latest refresh.
    """
    from csst_edge.data.imageio import read_image
    from csst_edge.data.transforms import normalize
    from csst_edge.fileio import atomic_write_image

    folder = run_dir / "online_labels"
    pseudo = train_set.group_ids("pseudo")
    paths = {int(i): folder / f"{int(i):07d}.png" for i in pseudo}
    marker = folder / f"epoch{epoch}.done"
    if epoch > 0 and epoch % cfg.refresh_every == 0 and not marker.exists() and dist.is_main:
        was_training = model.training
        model.eval()
        for i in pseudo:
            image = read_image(train_set.entries[i].image)
            x = torch.from_numpy(normalize(image, mean, std))[None].to(device)
            label = model(x).argmax(1)[0].to(torch.uint8).cpu().numpy()
            atomic_write_image(paths[int(i)], label)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        model.train(was_training)
    barrier(dist)
    return {i: p for i, p in paths.items() if p.exists()}


def _soft_k(train_set: TrainSet) -> int:
    softs = [e.soft for e in train_set.entries if e.group == "pseudo"]
    if not softs or any(s is None for s in softs):
        raise ConfigError("method 'soft' needs pseudo sources made with `pseudo-label --topk K` (soft/*.npz missing)")
    with np.load(softs[0]) as z:
        return int(z["ids"].shape[0])


def ranks_in_sync(model, dist: DistInfo, device) -> dict:
    """Gather per-tensor checksums of every rank's parameters: DDP must leave all replicas bit-identical.

    BatchNorm running statistics are not compared: without SyncBN (CPU/gloo) each rank updates them from its own
    slice of the batch after DDP's broadcast from rank 0, and rank 0's are the ones saved."""
    import torch.distributed as tdist

    sums = torch.stack([p.detach().double().sum() for p in model.parameters()]).to(device)
    gathered = [torch.zeros_like(sums) for _ in range(dist.world_size)]
    tdist.all_gather(gathered, sums)
    identical = all(torch.equal(gathered[0], g) for g in gathered[1:])
    return {
        "ranks_identical": identical,
        "world_size": dist.world_size,
        "max_abs_diff": max(float((gathered[0] - g).abs().max()) for g in gathered[1:]),
    }


def _model_pretrained(cfg: TrainConfig):
    # `pretrained` is a backbone weight file / torchvision weight name, except for `finetune`, `consistency`
    # and `fewshot`, where it is the checkpoint the whole model starts from.
    return None if cfg.method in ("finetune", "consistency", "fewshot") else cfg.pretrained


def _init_from_checkpoint(model, path, cfg: TrainConfig) -> None:
    if not path:
        raise ConfigError(f"method '{cfg.method}' needs 'pretrained' = the teacher checkpoint to start from")
    if cfg.method == "fewshot":
        # a new domain may have another class set: every tensor that fits is loaded, the classifier layers are
        # left freshly initialised when the class count differs (19 -> 66 classes)
        load_for_finetune(model, path, arch=cfg.model)
        return
    state = load_checkpoint(path)
    if state["arch"] != cfg.model:
        raise ConfigError(
            f"method '{cfg.method}' continues the teacher, so 'model' must be its arch "
            f"'{state['arch']}' (got '{cfg.model}')"
        )
    model.load_state_dict(clean_state_dict(state["model"]))


def _check_setup(cfg: TrainConfig, dist: DistInfo, device) -> None:
    check_logger_packages(cfg.logger)  # on every rank: rank 0 failing alone would leave the others waiting
    if cfg.amp != "none" and device.type != "cuda":
        raise ConfigError(f"config key 'amp' is '{cfg.amp}' but the device is {device}: AMP needs CUDA (use amp=none)")
    if cfg.batch_size % dist.world_size:
        raise ConfigError(
            f"config key 'batch_size' ({cfg.batch_size}) must divide by the number of ranks ({dist.world_size})"
        )


def _wrap_for_training(model, cfg: TrainConfig, dist: DistInfo, device):
    # DDP and torch.compile wrap the model for the steps only: evaluation and checkpoints use the bare model
    if dist.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    return torch.compile(model) if cfg.compile else model


def _val_loader(cfg: TrainConfig, mean, std) -> DataLoader:
    val_set, _ = eval_dataset(cfg.val, mean, std)
    workers = min(cfg.workers, 2)
    return DataLoader(
        val_set,
        batch_size=cfg.eval_batch_size,
        num_workers=workers,
        collate_fn=collate_eval,
        persistent_workers=workers > 0,  # evaluated every `eval_every` epochs: start its workers once, too
        generator=_loader_generator(cfg.seed),
    )


def build_train_loader(train_set: TrainSet, cfg: TrainConfig, soft_k: int, mean, std, device) -> DataLoader:
    """The run's one training DataLoader: its workers start once and live across epochs; each epoch hands them
    its batches and crop through `loader.batch_sampler.set_epoch` (an `EpochBatches`)."""
    ignore = TrainDataset.soft_fill(soft_k, train_set.ignore_index) if soft_k else train_set.ignore_index
    a = cfg.augment
    transforms = partial(
        train_transforms, scale=tuple(a.scale), ignore_index=ignore, flip=a.flip, blur=a.blur, jitter=a.jitter
    )
    return DataLoader(
        TrainDataset(train_set, transforms, mean, std, soft_k),
        batch_sampler=EpochBatches(),
        num_workers=cfg.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=cfg.workers > 0,
        generator=_loader_generator(cfg.seed),
    )


def _loader_generator(seed: int) -> torch.Generator:
    # Starting a DataLoader's iterator draws its workers' base seed from this generator (the global torch RNG by
    # default). A persistent loader starts its iterator once per process, so a resumed run would make that draw
    # at another epoch than the uninterrupted run and every dropout mask after it would differ; a private
    # generator leaves the global RNG to the model. (Worker seeds never reach the data: the planner seeds each
    # sample's augmentation.)
    return torch.Generator().manual_seed(seed)


def _scaled_poly_lr(optim, total_iters: int, lr_scale: float, iteration: int) -> float:
    return lr_scale * poly_lr(
        optim.lr, iteration, total_iters, optim.poly_power, optim.warmup_iters, optim.warmup_ratio
    )


def _step_reporter(cfg: TrainConfig, loggers, bar, task, ec):
    """Rank 0's `on_step`: a step record to the loggers every `log_every` steps, and the progress bar."""

    def on_step(step: Step) -> None:
        if cfg.log_every and step.iteration % cfg.log_every == 0:
            loggers.log(
                {
                    "type": "step",
                    "epoch": step.epoch,
                    "iteration": step.iteration,
                    "loss": round(step.loss, 5),
                    "lr": step.lr,
                    "img_per_s": round(step.img_per_s, 2),
                    **{k: round(v, 5) for k, v in step.parts.items()},
                }
            )
        if bar is not None:
            bar.update(
                task,
                advance=1,
                description=f"epoch {step.epoch + 1}/{cfg.epochs}",
                info=f"loss {step.loss:.3f}  lr {step.lr:.2e}  {step.img_per_s:.1f} img/s"
                f"  crop {ec.crop_h}x{ec.crop_w} x{ec.batch_size}",
            )

    return on_step


def _nan_to_none(value):
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _epoch_summary(record: dict) -> str:
    s = f"loss {record['loss']:.3f}  {record['img_per_s']:.1f} img/s"
    if "val_miou" in record:
        s += f"  val mIoU {100 * record['val_miou']:.1f}"
    return s
