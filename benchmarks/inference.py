"""Inference speed: PyTorch eager vs ONNX Runtime FP32 vs ONNX Runtime INT8, and what INT8 costs in mIoU.

Latency: fastscnn, bisenet_r18, icnet_r50 with random weights (latency does not depend on them) at 512x1024 and
1024x2048, batch 1, 2 CPU threads. Every backend runs the same deployed computation: uint8 frame in,
normalisation in the model, logits out. INT8 is ORT static QDQ U8S8 calibrated on synthetic frames.

Accuracy: a trained checkpoint (`--checkpoint`, e.g. Fast-SCNN on camvid-quarter) exported at `--eval-size`,
quantised with frames from the dataset's train split, and both models evaluated on its val split.

    python benchmarks/inference.py --checkpoint runs/fastscnn/best.pt --data camvid
    python benchmarks/inference.py --sizes 64x128 --iters 2          # smoke run

Writes benchmarks/out/inference.json and inference.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from csst_edge.export.bench import (
    BenchRow,
    bench_one,
    environment,
    markdown_table,
    resolve_model,
    rich_table,
)
from csst_edge.export.errors import ExportError
from csst_edge.fileio import atomic_write_json, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="fastscnn,bisenet_r18,icnet_r50")
    p.add_argument("--sizes", default="512x1024,1024x2048")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--calibration-frames", type=int, default=16)
    p.add_argument("--checkpoint", type=Path, default=None, help="trained checkpoint for the INT8 mIoU drop")
    p.add_argument("--data", default=None, help="dataset YAML or built-in name (CamVid) for the mIoU drop")
    p.add_argument("--eval-size", default="360x480", help="export / evaluation size for the mIoU drop")
    p.add_argument("--limit", type=int, default=None, help="evaluate on the first N val images")
    p.add_argument("--max-drop", type=float, default=None, help="also run the automatic float fallback (mIoU points)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out")
    return p.parse_args(argv)


def quantized_copy(fp32_path: Path, frames, out_dir: Path, **kwargs):
    from csst_edge.export.quantize import quantize_int8

    out = out_dir / (fp32_path.stem + "_int8.onnx")
    return quantize_int8(fp32_path, out, frames, threads=None, **kwargs)


def latency_rows(args, out_dir: Path, log) -> list[BenchRow]:
    from csst_edge.export.bench import parse_sizes
    from csst_edge.export.frames import synthetic_frames

    rows = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        source = resolve_model(name)
        for size in parse_sizes(args.sizes):
            common = dict(batch=1, threads=args.threads, warmup=args.warmup, iters=args.iters, out_dir=out_dir)
            for backend in ("torch", "ort-cpu"):
                row = bench_one(source, backend, size, **common)
                row.backend = "pytorch-eager" if backend == "torch" else "ort-fp32"
                rows.append(row)
                log(row)
            fp32 = out_dir / "onnx" / f"{name}_{size[0]}x{size[1]}_b1.onnx"
            row = BenchRow(source.label, "ort-int8", f"{size[0]}x{size[1]}", 1, arch=name)
            if fp32.is_file():
                try:
                    q = quantized_copy(fp32, synthetic_frames(args.calibration_frames, *size), out_dir / "onnx")
                    row = bench_one(resolve_model(q.path), "ort-cpu", size, **common)
                    row.model, row.backend = source.label, "ort-int8"
                    row.notes.append(f"argmax agreement with FP32 on calibration frames {100 * q.agreement:.1f}%")
                except ExportError as e:
                    row.status = f"error: {e}"
            else:
                row.status = "skipped: no FP32 export (see the ort-fp32 row)"
            rows.append(row)
            log(row)
    return rows


def accuracy(args, out_dir: Path, say) -> dict | None:
    if args.checkpoint is None or args.data is None:
        return None
    from csst_edge.export.bench import parse_sizes
    from csst_edge.export.evaluation import onnx_eval_fn
    from csst_edge.export.frames import load_frames
    from csst_edge.export.onnx_export import export_onnx

    ((h, w),) = parse_sizes(args.eval_size, "--eval-size")
    t0 = time.perf_counter()
    fp32 = out_dir / "onnx" / f"{args.checkpoint.stem}_eval_{h}x{w}.onnx"
    say(f"exporting {args.checkpoint} at {h}x{w}")
    export_onnx(args.checkpoint, fp32, h, w, output="logits", verify_images=args.data)
    frames = load_frames(args.data, args.calibration_frames, h, w, split="train")
    eval_fn = onnx_eval_fn(args.data, "val", args.limit, args.threads)
    say("quantising and evaluating FP32 / INT8 on val")
    q = quantized_copy(
        fp32,
        frames,
        out_dir / "onnx",
        eval_fn=eval_fn,
        auto_fallback_max_drop=None if args.max_drop is None else args.max_drop / 100,
        log=say,
    )
    return {
        "checkpoint": str(args.checkpoint),
        "data": args.data,
        "size": f"{h}x{w}",
        "val_limit": args.limit,
        "calibration_frames": len(frames),
        "fp32_miou": q.fp32_miou,
        "int8_miou": q.int8_miou,
        "drop": q.drop,
        "float_nodes": q.excluded_nodes,
        "target_met": q.target_met,
        "history": q.history,
        "agreement": q.agreement,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main(argv=None) -> int:
    from rich.console import Console

    args = parse_args(argv)
    console = Console()
    out_dir = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    log = lambda r: console.print(f"{r.model} {r.backend} {r.size}: " + (f"{r.mean_ms:.1f} ms" if r.ok else r.status))  # noqa: E731
    rows = latency_rows(args, out_dir, log)
    acc = accuracy(args, out_dir, lambda m: console.print(m))
    settings = {k: str(v) for k, v in vars(args).items()}
    atomic_write_json(
        out_dir / "inference.json",
        {
            "settings": settings,
            "environment": environment(args.threads),
            "latency": [r.to_dict() for r in rows],
            "int8_accuracy": acc,
        },
    )
    md = [
        "# Inference: PyTorch eager vs ONNX Runtime FP32 vs INT8",
        "",
        f"batch 1, {args.threads} threads, {args.warmup} warm-up + {args.iters} timed runs, random weights",
        "",
        markdown_table(rows),
    ]
    if acc:
        md += [
            "## INT8 accuracy",
            "",
            "| checkpoint | data | size | FP32 mIoU | INT8 mIoU | drop | float nodes |",
            "|---|---|---|---|---|---|---|",
            f"| {Path(acc['checkpoint']).name} | {acc['data']} | {acc['size']} | {100 * acc['fp32_miou']:.2f} | "
            f"{100 * acc['int8_miou']:.2f} | {100 * acc['drop']:.2f} | {len(acc['float_nodes'])} |",
            "",
        ]
    atomic_write_text(out_dir / "inference.md", "\n".join(md) + "\n")
    console.print(rich_table(rows, "inference latency"))
    if acc:
        console.print(
            f"INT8 mIoU: FP32 {100 * acc['fp32_miou']:.2f} → INT8 {100 * acc['int8_miou']:.2f} "
            f"(drop {100 * acc['drop']:.2f})"
        )
    console.print(f"wrote {out_dir / 'inference.json'} and {out_dir / 'inference.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
