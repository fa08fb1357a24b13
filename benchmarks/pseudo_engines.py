"""Pseudo-labelling throughput: the local engine against `--engine ray` on the same images, same teacher, same
settings (single scale + flip, batch 1), on this machine's CPUs.

The teacher is a freshly initialised model saved as a checkpoint (`--arch`, default `deeplabv3plus_lite0`, the
demo's teacher architecture, random weights, no download): speed does not depend on the weights. The images: the
first `--images` CamVid train frames (360x480) from ../shared/datasets/camvid, copied into a work folder (or
synthetic 360x480 frames when CamVid is absent).

Each engine labels N images and then 2N images into fresh output folders, alternating engines, `--repeats`
times; the best run of each counts (the CPUs are shared with other jobs: the best run is the least disturbed).

- end-to-end img/s = N / wall time of the call for N images: the local engine's model load and DataLoader
  start-up; for Ray, the teacher shipped through the object store, actor start (each imports torch and builds the
  model) and the streaming executor. Ray itself (`ray.init`, ~10-20 s here) is started once before, as a
  cluster is: it is reported on its own line, not counted.
- steady img/s = N / (wall(2N) - wall(N)): the marginal rate once both are running, start-up costs cancelled.

The labels are compared on every run: pixels that differ between the engines (the local engine uses all cores in
one process, each Ray actor one thread: CPU kernels may round the last bit differently, which flips the argmax of
a pixel whose top two classes tie to ~1e-7, frequent with random weights), and, once, byte for byte against the
local engine run with `threads=1`, the actors' count, where they must be identical.

    python3 benchmarks/pseudo_engines.py                      # 32 and 64 CamVid frames, 2 repeats
    python3 benchmarks/pseudo_engines.py --images 8 --repeats 1 --arch fastscnn   # quick check

Writes benchmarks/out/pseudo_engines.json and pseudo_engines.md.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import time
from pathlib import Path

from csst_edge.fileio import atomic_write_json, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
CAMVID = ROOT.parent / "shared" / "datasets" / "camvid" / "images" / "train"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=32, help="N: each engine labels N, then 2N images")
    p.add_argument("--arch", default="deeplabv3plus_lite0")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="local Ray's CPUs (= its actors)")
    p.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "out" / "pseudo_engines_work")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out")
    return p.parse_args(argv)


def prepare(args) -> tuple[Path, list[Path]]:
    import cv2
    import numpy as np
    import torch

    from csst_edge.models import create_model
    from csst_edge.models.checkpoint import save_checkpoint

    shutil.rmtree(args.work, ignore_errors=True)
    torch.manual_seed(0)
    model = create_model(args.arch, num_classes=11).eval()
    teacher = args.work / "teacher.pt"
    save_checkpoint(teacher, {"model": model.state_dict(), "arch": args.arch, "num_classes": 11, "epoch": 0})
    folders = []
    for n in (args.images, 2 * args.images):
        folder = args.work / f"images_{n}"
        folder.mkdir(parents=True)
        if CAMVID.is_dir():
            for path in sorted(CAMVID.glob("*.jpg"))[:n]:
                shutil.copyfile(path, folder / path.name)
        else:
            rng = np.random.default_rng(0)
            for i in range(n):
                cv2.imwrite(str(folder / f"f{i:04d}.jpg"), rng.integers(0, 256, (360, 480, 3), dtype=np.uint8))
        folders.append(folder)
    return teacher, folders


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def same_labels(a: Path, b: Path) -> bool:
    la, lb = sorted((a / "labels").rglob("*.png")), sorted((b / "labels").rglob("*.png"))
    return [p.relative_to(a) for p in la] == [p.relative_to(b) for p in lb] and all(
        filecmp.cmp(x, y, shallow=False) for x, y in zip(la, lb, strict=True)
    )


def differing_pixels(a: Path, b: Path) -> tuple[int, int]:
    """(pixels whose label differs, all pixels) over the label maps of two output folders."""
    import cv2

    diff = total = 0
    for x in sorted((a / "labels").rglob("*.png")):
        la = cv2.imread(str(x), cv2.IMREAD_UNCHANGED)
        lb = cv2.imread(str(b / x.relative_to(a)), cv2.IMREAD_UNCHANGED)
        diff += int((la != lb).sum())
        total += la.size
    return diff, total


def main(argv=None) -> dict:
    args = parse_args(argv)
    import ray

    from csst_edge.pseudo import PseudoLabelSettings, generate_pseudo_labels
    from csst_edge.pseudo.ray_engine import generate_pseudo_labels_ray

    teacher, folders = prepare(args)
    settings = PseudoLabelSettings(flip=True, device="cpu", workers=2, batch_size=1)
    ray_start = timed(lambda: ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="WARNING"))
    engines = {
        "local": lambda src, out: generate_pseudo_labels(teacher, [src], out, settings, progress=False),
        "ray": lambda src, out: generate_pseudo_labels_ray(teacher, [src], out, settings, progress=False),
    }
    walls = {(e, n): [] for e in engines for n in (args.images, 2 * args.images)}
    diff = [0, 0]
    try:
        for r in range(args.repeats):
            for folder in folders:
                n = len(list(folder.iterdir()))
                outs = {}
                for engine, run in engines.items():
                    out = args.work / f"out_{engine}_{n}_{r}"
                    walls[(engine, n)].append(timed(lambda run=run, out=out, folder=folder: run(folder, out)))
                    outs[engine] = out
                    print(f"repeat {r} {engine:5s} {n:4d} images: {walls[(engine, n)][-1]:.1f} s", flush=True)
                d, t = differing_pixels(outs["local"], outs["ray"])
                diff[0], diff[1] = diff[0] + d, diff[1] + t
        one_thread = PseudoLabelSettings(flip=True, device="cpu", workers=2, batch_size=1, threads=1)
        generate_pseudo_labels(teacher, [folders[0]], args.work / "out_local_1thread", one_thread, progress=False)
        identical = same_labels(args.work / "out_local_1thread", args.work / f"out_ray_{args.images}_0")
    finally:
        ray.shutdown()

    n = args.images
    rows = {}
    for engine in engines:
        t1, t2 = min(walls[(engine, n)]), min(walls[(engine, 2 * n)])
        rows[engine] = {
            "wall_n_s": round(t1, 2),
            "wall_2n_s": round(t2, 2),
            "end_to_end_img_s": round(n / t1, 3),
            "end_to_end_2n_img_s": round(2 * n / t2, 3),
            "steady_img_s": round(n / (t2 - t1), 3) if t2 > t1 else None,
        }
    ratio = {
        k: round(rows["ray"][k] / rows["local"][k], 3) if rows["ray"][k] and rows["local"][k] else None
        for k in ("end_to_end_img_s", "end_to_end_2n_img_s", "steady_img_s")
    }
    result = {
        "arch": args.arch,
        "images": n,
        "image_source": "camvid train (360x480)" if CAMVID.is_dir() else "synthetic 360x480",
        "settings": "single scale + flip, batch 1, cpu; local: 2 DataLoader workers, torch threads default; "
        f"ray: {args.cpus} CPU actors, 1 thread each",
        "cpus": os.cpu_count(),
        "ray_init_s": round(ray_start, 2),
        "repeats": args.repeats,
        "walls": {f"{e}_{k}": [round(v, 2) for v in vs] for (e, k), vs in walls.items()},
        "engines": rows,
        "ray_over_local": ratio,
        "labels_identical_to_local_threads_1": identical,
        "differing_pixels_vs_local_default": diff[0],
        "pixels_compared": diff[1],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "pseudo_engines.json", result)
    lines = [
        f"| engine | {n} images: wall (s) | img/s | {2 * n} images: wall (s) | img/s | steady img/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for engine, row in rows.items():
        lines.append(
            f"| {engine} | {row['wall_n_s']} | {row['end_to_end_img_s']} | {row['wall_2n_s']} | "
            f"{row['end_to_end_2n_img_s']} | {row['steady_img_s']} |"
        )
    lines.append(
        f"| ray / local | | {ratio['end_to_end_img_s']} | | {ratio['end_to_end_2n_img_s']} | {ratio['steady_img_s']} |"
    )
    lines.append("")
    lines.append(
        f"`ray.init` (not counted): {result['ray_init_s']} s. Labels identical to the local engine with threads=1: "
        f"{identical}; vs the local default (all cores): {diff[0]} of {diff[1]} pixels differ."
    )
    atomic_write_text(args.out / "pseudo_engines.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
