"""`csst-edge bench`: latency / FPS / memory (and optional mIoU) across backends and input sizes, one table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from csst_edge.cli.common import console, renamed


def bench_command(
    models: Annotated[
        list[str],
        typer.Argument(help="Checkpoints (.pt), exported models (.onnx, .engine) or model names (random weights)."),
    ],
    sizes: Annotated[
        str, typer.Option(help="Comma-separated HEIGHTxWIDTH input sizes (both sides: 512 alone is an error).")
    ] = "512x1024,1024x2048",
    batch_size: Annotated[int, typer.Option(help="Frames per inference call.")] = 1,
    threads: Annotated[int, typer.Option(help="CPU threads (PyTorch and onnxruntime).")] = 2,
    warmup: Annotated[int, typer.Option(help="Untimed warm-up runs.")] = 5,
    iters: Annotated[int, typer.Option(help="Timed runs.")] = 50,
    backends: Annotated[
        str,
        typer.Option(
            help="Comma-separated: torch, torch-compile (checkpoints), ort-cpu, ort-cuda, ort-trt (ONNX Runtime), "
            "trt (TensorRT engine), or 'all'; the names `runtime run --backend` and `predict --backend` take."
        ),
    ] = "all",
    fp16: Annotated[bool, typer.Option("--fp16", help="FP16 on GPU backends (torch on CUDA, ort-trt, trt).")] = False,
    data: Annotated[str | None, typer.Option(help="Dataset YAML: also measure val mIoU per row.")] = None,
    split: Annotated[str, typer.Option(help="Split for --data.")] = "val",
    limit: Annotated[int | None, typer.Option(help="Evaluate on the first N images only.")] = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Directory for bench.json, bench.md and exported models.")
    ] = Path("bench"),
    device: Annotated[str, typer.Option(help="Device of the torch rows: auto, cpu, cuda, cuda:1 ...")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar (the table is still printed).")] = False,
    old_batch: Annotated[int | None, typer.Option("--batch", hidden=True, help="Deprecated: --batch-size.")] = None,
) -> None:
    """Benchmark models across backends and sizes; unavailable backends get a 'skipped: reason' row.

    Examples:

      csst-edge bench runs/student/best.pt --sizes 512x1024 --backends torch,ort-cpu

      csst-edge bench best.pt --sizes 720x960 --backends torch,ort-cuda,ort-trt --device cuda --batch-size 4

      csst-edge bench best.pt student_int8.onnx --sizes 360x480 --data camvid --limit 20

      csst-edge bench fastscnn bisenet_r18 --sizes 512x1024,1024x2048 --iters 20     # random weights, latency only
    """
    import contextlib

    from csst_edge.export.bench import parse_backends, parse_sizes, rich_table, run_bench, write_report
    from csst_edge.progress import progress_bar

    batch = renamed(batch_size, old_batch, "--batch-size", "--batch", default=1)
    size_list, backend_list = parse_sizes(sizes), parse_backends(backends)
    total = len(models) * len(size_list) * len(backend_list)
    rows = []
    bar = None if quiet else progress_bar("row", console=console, transient=True)
    with bar if bar is not None else contextlib.nullcontext():
        task = bar.add_task("benchmarking", total=total) if bar is not None else None

        def on_row(row) -> None:
            if bar is not None:
                bar.update(task, advance=1, description=f"{row.model} {row.backend} {row.size}")

        rows = run_bench(
            models,
            size_list,
            batch=batch,
            threads=threads,
            warmup=warmup,
            iters=iters,
            backends=backend_list,
            fp16=fp16,
            data=data,
            limit=limit,
            split=split,
            out_dir=out,
            on_row=on_row,
            device=device,
        )
    settings = {
        "sizes": sizes,
        "batch": batch,
        "threads": threads,
        "warmup": warmup,
        "iters": iters,
        "backends": ",".join(backend_list),
        "fp16": fp16,
        "device": device,
        "data": data,
        "limit": limit,
    }
    json_path, md_path = write_report(rows, out, settings)
    console.print(rich_table(rows))
    console.print(f"wrote {json_path} and {md_path}")
