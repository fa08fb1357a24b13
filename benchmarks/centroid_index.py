"""Centroid-index build speed on 1024x2048 synthetic label maps: connected-components-3d (all classes in one pass)
in 1 and 2 processes, next to the per-class OpenCV approach (cv2.connectedComponentsWithStats once per class).

    python3 benchmarks/centroid_index.py --maps 32

Writes benchmarks/out/centroid_index.json and .md. Two figures per method: label maps/s for the whole build
(PNG decode included, as `csst-edge data index` runs it) and for component extraction alone (maps in memory).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from csst_edge.data.centroids import build_index, extract_centroids
from csst_edge.data.synth import render_scene
from csst_edge.fileio import atomic_write_json, atomic_write_text

NUM_CLASSES = 19


def opencv_per_class(label: np.ndarray, num_classes: int = NUM_CLASSES, min_area: int = 1):
    """The usual hand-written way: one binary mask and one connectedComponentsWithStats call per class."""
    cls, ys, xs, areas = [], [], [], []
    for c in range(num_classes):
        mask = (label == c).astype(np.uint8)
        if not mask.any():
            continue
        n, _, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
        keep = stats[1:, cv2.CC_STAT_AREA] >= min_area
        cls += [c] * int(keep.sum())
        xs.append(centroids[1:, 0][keep])
        ys.append(centroids[1:, 1][keep])
        areas.append(stats[1:, cv2.CC_STAT_AREA][keep])
    return np.array(cls), np.concatenate(ys), np.concatenate(xs), np.concatenate(areas)


def _opencv_build(files):
    for f in files:
        opencv_per_class(cv2.imread(str(f), cv2.IMREAD_UNCHANGED))


def _opencv_build_parallel(files, workers):
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_opencv_one, [str(f) for f in files], chunksize=4))


def _opencv_one(f):
    opencv_per_class(cv2.imread(f, cv2.IMREAD_UNCHANGED))


def timed(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--maps", type=int, default=32, help="number of 1024x2048 label maps")
    ap.add_argument("--repeat", type=int, default=2, help="best of N runs")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        files, labels = [], []
        for i in range(args.maps):
            _, label = render_scene(i, "AB"[i % 2], 1024, 2048)
            files.append(Path(tmp) / f"{i:04d}.png")
            cv2.imwrite(str(files[-1]), label)
            labels.append(label)
        comps = sum(extract_centroids(lab, NUM_CLASSES).cls.size for lab in labels)
        n = len(files)
        rows = []

        def add(method, scope, procs, seconds):
            rows.append(
                {
                    "method": method,
                    "scope": scope,
                    "processes": procs,
                    "seconds": round(seconds, 4),
                    "maps_per_s": round(n / seconds, 2),
                    "ms_per_map": round(1000 * seconds / n, 2),
                }
            )

        add(
            "cc3d (csst-edge)",
            "extract only",
            1,
            timed(lambda: [extract_centroids(lab, NUM_CLASSES) for lab in labels], args.repeat),
        )
        add(
            "opencv per class", "extract only", 1, timed(lambda: [opencv_per_class(lab) for lab in labels], args.repeat)
        )
        for procs in (1, 2):
            add(
                "cc3d (csst-edge)",
                "build (decode+extract)",
                procs,
                timed(lambda procs=procs: build_index(files, NUM_CLASSES, workers=procs, progress=False), args.repeat),
            )
        add("opencv per class", "build (decode+extract)", 1, timed(lambda: _opencv_build(files), args.repeat))
        add(
            "opencv per class",
            "build (decode+extract)",
            2,
            timed(lambda: _opencv_build_parallel(files, 2), args.repeat),
        )

    result = {
        "maps": n,
        "size": "1024x2048",
        "classes": NUM_CLASSES,
        "components": int(comps),
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "centroid_index.json", result)
    lines = [
        f"Centroid index on {n} synthetic 1024x2048 label maps ({comps} components, {NUM_CLASSES} classes), "
        f"{os.cpu_count()} CPUs, best of {args.repeat}.",
        "",
        "| method | scope | processes | maps/s | ms/map |",
        "|---|---|---:|---:|---:|",
    ]
    lines += [
        f"| {r['method']} | {r['scope']} | {r['processes']} | {r['maps_per_s']:.1f} | {r['ms_per_map']:.1f} |"
        for r in rows
    ]
    atomic_write_text(args.out / "centroid_index.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
