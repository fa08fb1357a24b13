"""What starting DataLoader workers every epoch costs: a fresh DataLoader per epoch (what the trainer did
before: its workers forked, decoded and exited every epoch) next to the trainer's one persistent DataLoader
(`EpochBatches` hands each epoch's batches and crop to workers that live for the whole run).

    python3 benchmarks/loader_workers.py --epochs 8 --workers 2 --parent-mib 1024

The data is camvid-quarter (every 4th CamVid train image, 92 images) under coarse2fine+, so the crop and the
batch size change every epoch as in training. No model runs: the figures are the data pipeline alone, so
the difference between the two rows is the start-up (fork of the parent, first batches decoded while
nothing else is ready) and shutdown of the workers, per epoch. `--parent-mib` makes the parent that big
(touched pages) before the loaders start, as the training process is (model, optimizer, CUDA context):
fork copies the parent's page tables. Writes benchmarks/out/loader_workers.json and .md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from functools import partial
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from csst_edge.data.transforms import train_transforms
from csst_edge.fileio import atomic_write_json, atomic_write_text
from csst_edge.train.config import parse_overrides, train_config_from_dict
from csst_edge.train.data import EpochBatches, EpochPlanner, TrainDataset, build_train_set
from csst_edge.train.schedules import CropSchedule

MEASURES = ("epoch_s", "iter_s", "first_batch_s", "shutdown_s")


def run(mode: str, args, dataset, planner, schedule) -> list[dict]:
    """Iterate `args.epochs` epochs of batches; per epoch, seconds to the first batch and for the whole epoch."""
    persistent = None
    if mode == "persistent":
        persistent = DataLoader(
            dataset, batch_sampler=EpochBatches(), num_workers=args.workers, persistent_workers=True
        )
    rows = []
    for epoch in range(args.epochs):
        ec = schedule.at(epoch)
        batches = planner.plan(epoch, ec.batch_size)
        t0 = time.perf_counter()
        if persistent is None:  # what the trainer did before: a new DataLoader (and new workers) every epoch
            sampler = EpochBatches()
            sampler.set_epoch(batches, (ec.crop_h, ec.crop_w))
            loader = DataLoader(dataset, batch_sampler=sampler, num_workers=args.workers, persistent_workers=False)
        else:
            loader = persistent
            loader.batch_sampler.set_epoch(batches, (ec.crop_h, ec.crop_w))
        it = iter(loader)  # a fresh loader forks its workers here; a persistent one only wakes them
        iter_s = time.perf_counter() - t0
        first = last = None
        for _batch in it:
            last = time.perf_counter()
            first = first if first is not None else last - t0
        end = time.perf_counter()  # a non-persistent loader has shut its workers down by now
        rows.append(
            {
                "mode": mode,
                "epoch": epoch,
                "crop": [ec.crop_h, ec.crop_w],
                "batch_size": ec.batch_size,
                "batches": len(batches),
                "iter_s": round(iter_s, 4),
                "first_batch_s": round(first, 4),
                "shutdown_s": round(end - last, 4),
                "epoch_s": round(end - t0, 4),
            }
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="camvid", help="dataset YAML or built-in name (default camvid)")
    ap.add_argument("--every", type=int, default=4, help="every n-th train image (4: camvid-quarter)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--crop", default="288x384", help="base crop HxW; coarse2fine+ cycles scales 0.5/0.75/1")
    ap.add_argument("--batch", type=int, default=8, help="batch at the base crop (bigger at smaller crops)")
    ap.add_argument("--parent-mib", type=int, default=1024, help="resident memory of the parent process")
    ap.add_argument("--rounds", type=int, default=3, help="alternate the two modes this many times")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    args = ap.parse_args()

    cfg = train_config_from_dict(
        {"train": [{"data": args.data, "split": "train", "every": args.every, "offset": 0}]},
        parse_overrides([f"crop={args.crop}"])
        | {"batch_size": args.batch, "crop_schedule": "coarse2fine+", "max_batch": 4 * args.batch},
    )
    train_set = build_train_set(cfg.train)
    planner = EpochPlanner(train_set, cfg)
    schedule = CropSchedule(cfg.crop_schedule, cfg.crop, cfg.batch_size, args.epochs, cfg.crop_scales, cfg.max_batch)
    a = cfg.augment
    transforms = partial(
        train_transforms, scale=a.scale, ignore_index=train_set.ignore_index, flip=a.flip, blur=a.blur, jitter=a.jitter
    )
    dataset = TrainDataset(train_set, transforms, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    ballast = np.ones(args.parent_mib * 2**20, np.uint8)  # touched: resident, as a trained model's memory is

    rows = []
    for _ in range(args.rounds):  # alternating, so load from other jobs on the machine hits both modes alike
        for mode in ("per-epoch", "persistent"):
            rows += run(mode, args, dataset, planner, schedule)
    summary = []
    for mode in ("per-epoch", "persistent"):
        later = [r for r in rows if r["mode"] == mode and r["epoch"] > 0]  # epoch 0 starts workers in both modes
        summary.append(
            {"mode": mode, **{k: round(statistics.median(r[k] for r in later), 3) for k in MEASURES}},
        )
    # paired by epoch (same crop, batch and samples in both modes), so the crop mix cancels out
    fresh = {(r["epoch"], i): r for i, r in enumerate(r for r in rows if r["mode"] == "per-epoch")}
    kept = {(r["epoch"], i): r for i, r in enumerate(r for r in rows if r["mode"] == "persistent")}
    diffs = [fresh[k]["epoch_s"] - kept[k]["epoch_s"] for k in fresh if k in kept and k[0] > 0]
    cost = round(statistics.median(diffs), 3)
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
        "args": {k: str(v) for k, v in vars(args).items()},
        "images": len(train_set.entries),
        "ballast_mib": ballast.nbytes // 2**20,
        "summary": summary,
        "startup_cost_per_epoch_s": cost,
        "rows": rows,
    }
    lines = [
        f"camvid-quarter ({len(train_set.entries)} images), coarse2fine+ from {args.crop} x{args.batch}, "
        f"{args.workers} workers, parent {args.parent_mib} MiB; medians over epochs 1..{args.epochs - 1} "
        f"of {args.rounds} rounds (epoch 0 starts the workers in both). Machine: {result['machine']}.",
        "",
        "| DataLoader | epoch (s) | iter() (s) | first batch (s) | last batch to end (s) |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [f"| {s['mode']} | " + " | ".join(str(s[k]) for k in MEASURES) + " |" for s in summary]
    lines += ["", f"Worker start-up and shutdown per epoch (median of paired epoch differences): {cost} s."]
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "loader_workers.json", result)
    atomic_write_text(args.out / "loader_workers.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
