"""`csst-edge bench`: latency / FPS / memory (and optional mIoU) across backends and input sizes, one table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from csst_edge.cli.common import EvalLimit, OldBatch, console, out_option, renamed

_HELP = {  # help texts too long to stand on their option's line, by parameter name
    "models": "Checkpoints (.pt), exported models (.onnx, .engine) or model names (random weights).",
    "sizes": "Comma-separated HEIGHTxWIDTH input sizes (both sides: 512 alone is an error).",
    "backends": "Comma-separated: torch, torch-compile (checkpoints), ort-cpu, ort-cuda, ort-trt (ONNX Runtime), "
    "trt (TensorRT engine), or 'all'; the names `runtime run --backend` and `predict --backend` take.",
}


def bench_command(
    models: Annotated[list[str], typer.Argument(help=_HELP["models"])],
    sizes: Annotated[str, typer.Option(help=_HELP["sizes"])] = "512x1024,1024x2048",
    batch_size: Annotated[int, typer.Option(help="Frames per inference call.")] = 1,
    threads: Annotated[int, typer.Option(help="CPU threads (PyTorch and onnxruntime).")] = 2,
    warmup: Annotated[int, typer.Option(help="Untimed warm-up runs.")] = 5,
    iters: Annotated[int, typer.Option(help="Timed runs.")] = 50,
    backends: Annotated[str, typer.Option(help=_HELP["backends"])] = "all",
    fp16: Annotated[bool, typer.Option("--fp16", help="FP16 on GPU backends (torch on CUDA, ort-trt, trt).")] = False,
    data: Annotated[str | None, typer.Option(help="Dataset YAML: also measure val mIoU per row.")] = None,
    split: Annotated[str, typer.Option(help="Split for --data.")] = "val",
    limit: EvalLimit = None,
    out: Annotated[Path, out_option("Directory for bench.json, bench.md and exported models.")] = Path("bench"),
    device: Annotated[str, typer.Option(help="Device of the torch rows: auto, cpu, cuda, cuda:1 ...")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar (the table is still printed).")] = False,
    old_batch: OldBatch = None,
) -> None:
    """Benchmark models across backends and sizes; unavailable backends get a 'skipped: reason' row.

    Examples:

      csst-edge bench runs/student/best.pt --sizes 512x1024 --backends torch,ort-cpu

      csst-edge bench best.pt --sizes 720x960 --backends torch,ort-cuda,ort-trt --device cuda --batch-size 4

      csst-edge bench best.pt student_int8.onnx --sizes 360x480 --data camvid --limit 20

      csst-edge bench fastscnn bisenet_r18 --sizes 512x1024,1024x2048 --iters 20     # random weights, latency only
    """
    from csst_edge.export.bench import parse_backends, parse_sizes, rich_table, write_report

    batch = renamed(batch_size, old_batch, "--batch-size", "--batch", default=1)
    size_list, backend_list = parse_sizes(sizes), parse_backends(backends)
    rows = _run_with_progress(models, size_list, backend_list, locals())
    json_path, md_path = write_report(rows, out, _recorded_settings(locals(), backend_list))
    console.print(rich_table(rows))
    console.print(f"wrote {json_path} and {md_path}")


# run_bench's options that are the command's own (batch: --batch-size, or the deprecated --batch)
_RUN_OPTIONS = ("batch", "threads", "warmup", "iters", "fp16", "data", "limit", "split", "device")
# what bench.json and bench.md record, in this order
_RECORDED = ("sizes", "batch", "threads", "warmup", "iters", "backends", "fp16", "device", "data", "limit")


def _run_with_progress(models: list[str], sizes: list, backends: list[str], params: dict) -> list:
    """run_bench with a transient bar over its rows (one row a model x size x backend); with -q, no bar."""
    import contextlib

    from csst_edge.export.bench import run_bench
    from csst_edge.progress import progress_bar

    bar = None if params["quiet"] else progress_bar("row", console=console, transient=True)
    with bar if bar is not None else contextlib.nullcontext():
        total = len(models) * len(sizes) * len(backends)
        task = bar.add_task("benchmarking", total=total) if bar is not None else None

        def on_row(row) -> None:
            if bar is not None:
                bar.update(task, advance=1, description=f"{row.model} {row.backend} {row.size}")

        options = {name: params[name] for name in _RUN_OPTIONS}
        return run_bench(models, sizes, backends=backends, out_dir=params["out"], on_row=on_row, **options)


def _recorded_settings(params: dict, backends: list[str]) -> dict:
    """The options as given (--sizes as typed), except the backends: the list 'all' stood for."""
    return {name: params[name] for name in _RECORDED} | {"backends": ",".join(backends)}
