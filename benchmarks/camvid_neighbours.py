"""How new are camvid-quarter's "unlabelled" frames? Paste the nearest labelled frame's ground truth onto them.

CamVid frames are one second of video apart (names are `<sequence>_<frame>`, frames counted at 30 fps), and
camvid-quarter labels every 4th train frame (as benchmarks/camvid_csst.py does), so each of the 275 "unlabelled"
frames is one or two seconds from a labelled frame of the same sequence. This scores, against each frame's ground
truth, the ground truth of its nearest labelled frame in time, pasted as is (no motion compensation): a
pseudo-labeller that knows nothing but the labelled set and the clock. The closer it comes to the teacher's
pseudo labels, the less the unlabelled frames show that the labelled ones do not, and the less any self-training
on them can add.

Rows:
  unlabelled <- labelled   the 275 unlabelled train frames, from the nearest of the 92 labelled ones
  val <- labelled          the 101 val frames (sequence 0016E5), from the nearest labelled frame of that sequence
  val <- any train         the same from the nearest of all 367 train frames (labelled or not)
Pixels that are void in the pasted label are left out and reported as coverage, as with thresholded pseudo labels.
A second table gives each split's sequences as clips: frames, seconds from first to last, median step.

    python3 benchmarks/camvid_neighbours.py          # ~20 s on 2 cores; camvid_neighbours.json / .md in --out
    python3 benchmarks/camvid_neighbours.py --block 8   # camvid_csst.py --block 8's split: camvid_neighbours_block8.*
"""

from __future__ import annotations

import argparse
import re
from dataclasses import replace
from pathlib import Path

import numpy as np

from csst_edge.data.dataset import list_samples, load_dataset_config
from csst_edge.data.selection import SourceConfig, select
from csst_edge.fileio import atomic_write_json, atomic_write_text
from csst_edge.pipeline.report import markdown_table

RARE = ("pole", "sign", "fence", "pedestrian", "bicyclist")


def parse_frame(name: str) -> tuple[str, int]:
    """`0016E5_07959` -> ("0016E5", 7959); `0006R0_f00990` -> ("0006R0", 990). A name without a frame number
    after its last "_" is an error."""
    sequence, _, frame = Path(name).name.rpartition("_")
    match = re.fullmatch(r"[A-Za-z]*(\d+)", frame)
    if not sequence or match is None:
        raise ValueError(f"'{name}' is not a CamVid frame name <sequence>_<frame number>")
    return sequence, int(match.group(1))


def nearest_pairs(targets: list[str], pool: list[str]) -> list[tuple[str, str | None, int | None]]:
    """For each target, the pool frame of the same sequence nearest in time, and the gap in frames.

    Ties go to the earlier frame; a target whose sequence has no pool frame gets (target, None, None). A frame is
    never paired with itself."""
    by_sequence: dict[str, list[tuple[int, str]]] = {}
    for name in pool:
        sequence, frame = parse_frame(name)
        by_sequence.setdefault(sequence, []).append((frame, name))
    pairs = []
    for name in targets:
        sequence, frame = parse_frame(name)
        candidates = [(abs(f - frame), f, n) for f, n in by_sequence.get(sequence, []) if n != name]
        if not candidates:
            pairs.append((name, None, None))
            continue
        gap, _, source = min(candidates)
        pairs.append((name, source, gap))
    return pairs


def sequence_spans(names: list[str], fps: float) -> dict[str, dict]:
    """Per sequence: how many frames, the seconds from the first to the last, and the median step between
    consecutive frames, in seconds. It shows how much of the world a split covers."""
    frames: dict[str, list[int]] = {}
    for name in names:
        sequence, frame = parse_frame(name)
        frames.setdefault(sequence, []).append(frame)
    spans = {}
    for sequence, fs in sorted(frames.items()):
        fs = sorted(fs)
        steps = np.diff(fs) / fps
        spans[sequence] = {
            "frames": len(fs),
            "span_s": (fs[-1] - fs[0]) / fps,
            "median_step_s": float(np.median(steps)) if len(steps) else 0.0,
        }
    return spans


def paste_score(pairs, label_of: dict[str, Path], ds) -> dict:
    """mIoU of the pasted labels against each target's own ground truth, per-class IoU, coverage (the share of the
    target's labelled pixels where the pasted label is not void) and the gaps in frames."""
    import torch

    from csst_edge.data.imageio import read_label
    from csst_edge.evaluate.metrics import ConfusionMatrix

    confusion = ConfusionMatrix(ds.num_classes, ds.ignore_index)
    kept = labelled = 0
    gaps = []
    for target, source, gap in pairs:
        if source is None:
            continue
        truth = read_label(label_of[target], ds.label_lut)
        pasted = read_label(label_of[source], ds.label_lut)
        if pasted.shape != truth.shape:
            raise ValueError(f"{label_of[source]} is {pasted.shape}, {label_of[target]} is {truth.shape}")
        valid = truth != ds.ignore_index
        labelled += int(valid.sum())
        kept += int((valid & (pasted < ds.num_classes)).sum())
        truth[pasted >= ds.num_classes] = ds.ignore_index  # void in the pasted label: no prediction there
        pasted = np.where(pasted < ds.num_classes, pasted, 0)  # any id; those pixels are ignored above
        confusion.update(torch.from_numpy(pasted), torch.from_numpy(truth))
        gaps.append(gap)
    metrics = confusion.compute()
    return {
        "miou": metrics["miou"],
        "per_class_iou": metrics["per_class_iou"],
        "coverage": kept / max(labelled, 1),
        "frames": len(gaps),
        "gap_frames": gaps,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="camvid", help="dataset name or YAML (CamVid frame names)")
    ap.add_argument("--fps", type=float, default=30.0, help="video frames per second of the frame numbers")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    ap.add_argument("--block", type=int, default=1, help="camvid_csst.py's --block: every 4th run of this many frames")
    args = ap.parse_args()
    if args.block < 1:
        ap.error(f"--block must be >= 1, got {args.block}")

    ds = load_dataset_config(args.data)
    train = list_samples(ds, "train")
    val = list_samples(ds, "val")
    label_of = {s.name: s.label for s in train + val}
    split = SourceConfig(data=args.data, every=4, offset=0, block=args.block)  # camvid_csst.py's split
    labelled = [s.name for s in select(train, split)]
    unlabelled = [s.name for s in select(train, replace(split, complement=True))]
    all_train = [s.name for s in train]
    rows = {
        "unlabelled <- labelled": paste_score(nearest_pairs(unlabelled, labelled), label_of, ds),
        "val <- labelled": paste_score(nearest_pairs([s.name for s in val], labelled), label_of, ds),
        "val <- any train": paste_score(nearest_pairs([s.name for s in val], all_train), label_of, ds),
    }
    spans = {"train": sequence_spans(all_train, args.fps), "val": sequence_spans([s.name for s in val], args.fps)}
    clips = "| split | sequence | frames | first to last (s) | median step (s) |\n|---|---|---:|---:|---:|\n"
    for split, per_sequence in spans.items():
        for sequence, v in per_sequence.items():
            clips += f"| {split} | {sequence} | {v['frames']} | {v['span_s']:.1f} | {v['median_step_s']:.2f} |\n"
    rare = [ds.class_names.index(c) for c in RARE if c in ds.class_names]
    summary = "| pasted labels | frames | gap, median (s) | gap, max (s) | mIoU (%) | rare-5 (%) | coverage (%) |\n"
    summary += "|---|---:|---:|---:|---:|---:|---:|\n"
    for name, r in rows.items():
        gaps = np.asarray(r["gap_frames"], float) / args.fps
        rare5 = 100 * float(np.nanmean([r["per_class_iou"][i] for i in rare]))
        r.update(gap_median_s=float(np.median(gaps)), gap_max_s=float(gaps.max()), rare5=rare5)
        summary += (
            f"| {name} | {r['frames']} | {r['gap_median_s']:.1f} | {r['gap_max_s']:.1f} | {100 * r['miou']:.1f} "
            f"| {rare5:.1f} | {100 * r['coverage']:.1f} |\n"
        )
    report = (
        f"{len(labelled)} labelled + {len(unlabelled)} unlabelled train frames, {len(val)} val frames: each frame "
        "scored with its nearest labelled frame's ground truth pasted on it.\n\n"
        + summary
        + "\n"
        + markdown_table(rows, ds.class_names)
        + "\nThe splits as video clips:\n\n"
        + clips
    )
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "camvid_neighbours" if args.block == 1 else f"camvid_neighbours_block{args.block}"
    atomic_write_json(
        args.out / f"{stem}.json",
        {"class_names": ds.class_names, "block": args.block, "rows": rows, "sequences": spans},
    )
    atomic_write_text(args.out / f"{stem}.md", report)
    print(report)


if __name__ == "__main__":
    main()
