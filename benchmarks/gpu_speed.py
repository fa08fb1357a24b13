"""GPU inference speed of the students: fp32 eager, fp16 autocast, channels_last, CUDA graphs, torch.compile.

Fast-SCNN, BiSeNet-R18 and ICNet-R50 (random weights, 19 classes: latency does not depend on the weights) at
1024x2048, batch 1, input already on the GPU (normalised float, no host-to-device copy), logits out. Rows:

  eager               fp32 eager (PyTorch's default cuDNN TF32 setting, recorded in the JSON)
  eager-fp16          torch.autocast(float16)
  channels-last-fp16  model and input in channels_last, autocast float16
  cuda-graph-fp16     the autocast-fp16 forward captured once with torch.cuda.graph on a static input, replayed
  compile             torch.compile(mode=--compile-mode) + autocast float16, in a child process with a timeout,
                      run after all other rows; a failure or timeout is a row with the error, not a crash

Latency: after --warmup calls, each of --iters calls is timed with CUDA events around it and a synchronize after
it (so it is one frame's latency, kernel launches included); mean / p50 / p90 / p99 ms and FPS = batch / mean.
Peak memory: torch.cuda.max_memory_allocated over the row, with only that row's model on the GPU (weights +
activations + workspace; a CUDA graph's private pool included). Every row also notes its argmax agreement and
max |logit difference| with the fp32 eager output of the same input.

    python3 benchmarks/gpu_speed.py                                          # CUDA, the full table
    python3 benchmarks/gpu_speed.py --device cpu --size 128x256 --iters 2    # CPU smoke run (eager fp32 only)

Writes gpu_speed.json and gpu_speed.md to --out (default: $OUT if set, else benchmarks/out/gpu), rewritten after
every row, so a run cut short still leaves the rows it finished. Exit code 1 if a non-compile row errored
(`--strict`: any row), 2 if CUDA was asked for and is missing.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from csst_edge.errors import ConfigError
from csst_edge.export.bench import BenchRow, PeakRSS, environment, fill_latency, time_calls
from csst_edge.fileio import atomic_write_json, atomic_write_text
from csst_edge.models import create_model, list_models
from csst_edge.sizes import parse_hw

ROOT = Path(__file__).resolve().parents[1]
MODES = ("eager", "eager-fp16", "channels-last-fp16", "cuda-graph-fp16", "compile")
CUDA_ONLY = ("eager-fp16", "channels-last-fp16", "cuda-graph-fp16", "compile")
DEFAULT_MODELS = "fastscnn,bisenet_r18,icnet_r50"
NUM_CLASSES = 19


def default_out() -> Path:
    return Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "benchmarks" / "out" / "gpu"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=DEFAULT_MODELS, help=f"registered names (default {DEFAULT_MODELS})")
    p.add_argument("--size", default="1024x2048", help="input HEIGHTxWIDTH")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {', '.join(MODES)}")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cpu: smoke run, CUDA rows skipped")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--threads", type=int, default=None, help="CPU threads (--device cpu; default: torch's)")
    p.add_argument(
        "--compile-mode",
        default="reduce-overhead",
        help="torch.compile mode: reduce-overhead (inductor + CUDA graphs) or max-autotune-no-cudagraphs "
        "(slower to compile: autotunes every convolution) or default; default %(default)s",
    )
    p.add_argument("--compile-timeout", type=float, default=120.0, help="seconds per compile row (child process)")
    p.add_argument("--budget-s", type=float, default=None, help="stop starting rows after this many seconds")
    p.add_argument("--no-cudnn-benchmark", action="store_true", help="leave torch.backends.cudnn.benchmark off")
    p.add_argument("--allow-cpu-compile", action="store_true", help="run the compile row on the CPU (slow; tests)")
    p.add_argument("--strict", action="store_true", help="exit 1 if any row errored, compile rows included")
    p.add_argument("--out", type=Path, default=None, help="output folder (default $OUT or benchmarks/out/gpu)")
    p.add_argument("--worker-row", default=None, help=argparse.SUPPRESS)  # internal: one compile row, JSON to file
    p.add_argument("--worker-json", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.out = args.out or default_out()
    try:
        args.hw = parse_hw(args.size, "--size", minimum=32)  # the students downsample 32x
    except ConfigError as e:
        p.error(str(e))
    args.model_list = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.model_list if m not in list_models()]
    if unknown or not args.model_list:
        p.error(f"--models: unknown {', '.join(unknown) or '(none given)'}; registered: {', '.join(list_models())}")
    args.mode_list = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in args.mode_list if m not in MODES]
    if bad or not args.mode_list:
        p.error(f"--modes: unknown {', '.join(bad) or '(none given)'}; choose from {', '.join(MODES)}")
    if args.batch < 1 or args.iters < 1 or args.warmup < 0:
        p.error("--batch and --iters must be >= 1, --warmup >= 0")
    return args


# ------------------------------------------------------------------------------------------------- rows
def base_model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, num_classes=NUM_CLASSES).eval()


def make_input(args, device: torch.device) -> torch.Tensor:
    x = torch.randn(args.batch, 3, *args.hw, generator=torch.Generator().manual_seed(1))
    return x.to(device)


def _precision(mode: str, device: torch.device) -> str:
    return "fp32" if mode == "eager" or device.type != "cuda" else "fp16"


def make_runner(mode: str, model: torch.nn.Module, x: torch.Tensor, device: torch.device, args):
    """(run, setup note): run() does one forward pass and returns the logits (on the device)."""
    cuda = device.type == "cuda"
    half = mode != "eager" and cuda
    if mode == "channels-last-fp16":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if mode == "compile":
        model = torch.compile(model, mode=None if args.compile_mode == "default" else args.compile_mode)

    def run():
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.float16, enabled=half):
            return model(x)

    if mode != "cuda-graph-fp16":
        return run
    # CUDA graph: warm up on a side stream (cuDNN picks its algorithms), capture once, replay on the static input.
    # Autocast's weight-cast cache must be off during capture (torch.cuda.graph docs).
    static_x = x.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.inference_mode():
        for _ in range(3):
            with torch.autocast("cuda", dtype=torch.float16, cache_enabled=False):
                model(static_x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph):
        with torch.autocast("cuda", dtype=torch.float16, cache_enabled=False):
            static_out = model(static_x)

    def replay():
        graph.replay()
        return static_out

    return replay


def time_cuda(run, warmup: int, iters: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-call latency from CUDA events (synchronised after every call), and the wall-clock times alongside."""
    for _ in range(warmup):
        run()
    torch.cuda.synchronize()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
    wall = np.empty(iters)
    for i, (start, end) in enumerate(events):
        t0 = time.perf_counter()
        start.record()
        run()
        end.record()
        end.synchronize()
        wall[i] = time.perf_counter() - t0
    return np.array([s.elapsed_time(e) / 1000.0 for s, e in events]), wall


def compare(row: BenchRow, out: torch.Tensor, ref: torch.Tensor | None) -> None:
    if ref is None:
        return
    out = out.float().cpu()
    scale = ref.abs().max().item()
    agree = (out.argmax(1) == ref.argmax(1)).float().mean().item()
    diff = (out - ref).abs().max().item()
    row.notes.append(
        f"vs eager fp32: argmax agreement {100 * agree:.2f}%, max |dlogit| {diff:.2e} (|logit| <= {scale:.2e})"
    )


def bench_row(name: str, mode: str, args, device: torch.device, ref: torch.Tensor | None) -> tuple[BenchRow, object]:
    """One row, in this process. Returns (row, fp32 output on the CPU for the eager row else None)."""
    row = BenchRow(name, mode, f"{args.hw[0]}x{args.hw[1]}", args.batch, arch=name)
    row.precision = _precision(mode, device)
    if mode == "compile":
        row.precision += f", {args.compile_mode}"
    output = None
    try:
        model = base_model(name).to(device)
        row.file_mb = sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 2**20
        x = make_input(args, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        rss = PeakRSS() if device.type == "cpu" else None
        if rss:
            rss.__enter__()
        try:
            run = make_runner(mode, model, x, device, args)
            out = run()  # first call: cuDNN autotuning / compilation, reported as setup time
            if device.type == "cuda":
                torch.cuda.synchronize()
            row.setup_s = round(time.perf_counter() - t0, 3)
            if device.type == "cuda":
                times, wall = time_cuda(run, max(0, args.warmup - 1), args.iters)
                row.notes.append(f"wall-clock mean {1000 * wall.mean():.3f} ms")
            else:
                times = time_calls(run, max(0, args.warmup - 1), args.iters)
            out = run()
            if device.type == "cuda":
                torch.cuda.synchronize()
        finally:
            if rss:
                rss.__exit__(None, None, None)
        fill_latency(row, times)
        if device.type == "cuda":
            row.peak_mem_mb, row.mem_kind = torch.cuda.max_memory_allocated() / 2**20, "cuda-max-allocated"
            row.notes.append(f"peak reserved {torch.cuda.max_memory_reserved() / 2**20:.0f} MB")
        else:
            row.peak_mem_mb, row.mem_kind = rss.peak_delta_mb, "rss-delta"
        if mode == "eager" and row.precision == "fp32":
            output = out.float().cpu()
        else:
            compare(row, out, ref)
    except Exception as e:  # one failing mode must not end the table
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        row.status = f"error: {type(e).__name__}: {first}"
    finally:
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
    return row, output


def compile_row(name: str, args, deadline: float | None) -> BenchRow:
    """The compile row in a child process: a hung or crashing compiler costs at most the timeout."""
    row = BenchRow(name, "compile", f"{args.hw[0]}x{args.hw[1]}", args.batch, arch=name)
    row.precision = f"{_precision('compile', torch.device(args.device))}, {args.compile_mode}"
    timeout = args.compile_timeout
    if deadline is not None:
        timeout = min(timeout, deadline - time.monotonic())
        if timeout < 20:
            row.status = f"skipped: time budget (--budget-s {args.budget_s:g}) spent"
            return row
    with tempfile.TemporaryDirectory(prefix="gpu_speed_") as tmp:
        result = Path(tmp) / "row.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker-row", name, "--worker-json", str(result)]
        cmd += ["--size", args.size, "--batch", str(args.batch), "--device", args.device]
        cmd += ["--warmup", str(args.warmup), "--iters", str(args.iters), "--compile-mode", args.compile_mode]
        cmd += ["--out", str(args.out)] + (["--no-cudnn-benchmark"] if args.no_cudnn_benchmark else [])
        cmd += ["--threads", str(args.threads)] if args.threads else []
        t0 = time.perf_counter()
        pipe = dict(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        proc = subprocess.Popen(cmd, start_new_session=True, **pipe)
        try:
            log, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the child and inductor's compile workers
            proc.communicate()
            row.status = f"error: torch.compile row did not finish within {timeout:.0f} s (--compile-timeout)"
            row.setup_s = round(time.perf_counter() - t0, 1)
            return row
        if result.is_file():
            data = json.loads(result.read_text())
            return BenchRow(**data)
        tail = [line for line in (log or "").strip().splitlines() if line.strip()][-1:] or ["(no output)"]
        row.status = f"error: compile worker exited {proc.returncode}: {tail[0][:300]}"
        return row


def worker(args) -> int:
    device = setup_device(args)
    ref_row, ref = bench_row(args.worker_row, "eager", _quick(args), device, None)
    row, _ = bench_row(args.worker_row, "compile", args, device, ref if ref_row.ok else None)
    atomic_write_json(args.worker_json, row.to_dict())
    return 0


def _quick(args):
    """The reference forward pass only: no timing to speak of."""
    quick = copy.copy(args)
    quick.warmup, quick.iters = 0, 1
    return quick


def setup_device(args) -> torch.device:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = not args.no_cudnn_benchmark
    return torch.device(args.device)


# ----------------------------------------------------------------------------------------------- report
COLUMNS = ("model", "mode", "size", "precision", "mean ms", "p50 ms", "p90 ms", "FPS", "peak MB", "setup s", "status")


def _fmt(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def cells(r: BenchRow) -> list[str]:
    return [
        r.model,
        r.backend,
        r.size,
        r.precision,
        _fmt(r.mean_ms),
        _fmt(r.p50_ms),
        _fmt(r.p90_ms),
        _fmt(r.fps, 1),
        _fmt(r.peak_mem_mb, 0),
        _fmt(r.setup_s, 1),
        r.status,
    ]


def environment_info(args) -> dict:
    env = environment(torch.get_num_threads())
    env.update(
        torch_cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        cudnn_benchmark=torch.backends.cudnn.benchmark,
        cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
        matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
    )
    if args.device == "cuda" and torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env.update(gpu=p.name, capability=f"{p.major}.{p.minor}", gpu_memory_gb=round(p.total_memory / 2**30, 1))
    return env


def write_outputs(rows: list[BenchRow], args, env: dict, t_start: float) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    settings = {
        "models": args.model_list,
        "size": args.size,
        "batch": args.batch,
        "modes": args.mode_list,
        "device": args.device,
        "warmup": args.warmup,
        "iters": args.iters,
        "compile_mode": args.compile_mode,
        "compile_timeout_s": args.compile_timeout,
        "budget_s": args.budget_s,
        "num_classes": NUM_CLASSES,
        "weights": "random (seed 0)",
        "input": "normalised float32 on the device, no host-to-device copy",
    }
    elapsed = round(time.perf_counter() - t_start, 1)
    record = {"settings": settings, "environment": env, "elapsed_s": elapsed, "rows": [r.to_dict() for r in rows]}
    atomic_write_json(args.out / "gpu_speed.json", record)
    if args.device == "cuda":
        where = f"{env.get('gpu')}, torch {env.get('torch')}, CUDA {env.get('torch_cuda')}, cuDNN {env.get('cudnn')}"
        timing = f"CUDA events, synchronised per call; cudnn.benchmark {env.get('cudnn_benchmark')}"
    else:
        where = f"CPU smoke run ({env.get('processor')}, {env.get('threads')} threads), torch {env.get('torch')}"
        timing = "wall clock"
    md = [
        "# GPU inference speed",
        "",
        f"{where}; batch {args.batch}, {args.warmup} warm-up + {args.iters} timed calls ({timing}), "
        f"random weights, {NUM_CLASSES} classes, input on the device.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    md += ["| " + " | ".join(c.replace("|", "/") for c in cells(r)) + " |" for r in rows]
    notes = [f"- {r.model} / {r.backend}: {'; '.join(r.notes)}" for r in rows if r.notes]
    if notes:
        md += ["", *notes]
    atomic_write_text(args.out / "gpu_speed.md", "\n".join(md) + "\n")


def print_table(rows: list[BenchRow]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print("\t".join(COLUMNS))
        for r in rows:
            print("\t".join(cells(r)))
        return
    table = Table(title="GPU inference speed")
    for c in COLUMNS:
        table.add_column(c, justify="left" if c in ("model", "mode", "size", "precision", "status") else "right")
    for r in rows:
        table.add_row(*cells(r), style=None if r.ok else ("yellow" if r.status.startswith("skipped") else "red"))
    Console(width=200).print(table)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker_row:
        return worker(args)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_speed: no CUDA device (torch.cuda.is_available() is False); --device cpu runs a smoke test")
        return 2
    t_start = time.perf_counter()
    deadline = None if args.budget_s is None else time.monotonic() + args.budget_s
    device = setup_device(args)
    env = environment_info(args)
    rows: list[BenchRow] = []
    compile_later = []
    for name in args.model_list:
        ref = None
        for mode in args.mode_list:
            row = BenchRow(name, mode, f"{args.hw[0]}x{args.hw[1]}", args.batch, arch=name)
            row.precision = _precision(mode, device)
            if mode in CUDA_ONLY and device.type != "cuda" and not (mode == "compile" and args.allow_cpu_compile):
                row.status = "skipped: needs CUDA (--device cpu)"
                row.precision = _precision(mode, torch.device("cuda"))  # what the row runs on a GPU
                if mode == "compile":
                    row.precision += f", {args.compile_mode}"
            elif mode == "compile":
                compile_later.append((name, len(rows)))
                row.status = "pending: compile rows run after the others"
            elif deadline is not None and time.monotonic() > deadline:
                row.status = f"skipped: time budget (--budget-s {args.budget_s:g}) spent"
            else:
                row, out = bench_row(name, mode, args, device, ref)
                ref = out if out is not None else ref
            rows.append(row)
            print(f"{row.model} {row.backend}: " + (f"{row.mean_ms:.2f} ms" if row.ok else row.status), flush=True)
            write_outputs(rows, args, env, t_start)
    for name, index in compile_later:
        print(f"{name} compile ({args.compile_mode}) ...", flush=True)
        rows[index] = compile_row(name, args, deadline)
        r = rows[index]
        print(f"{r.model} {r.backend}: " + (f"{r.mean_ms:.2f} ms" if r.ok else r.status), flush=True)
        write_outputs(rows, args, env, t_start)
    print_table(rows)
    print(f"wrote {args.out / 'gpu_speed.json'} and {args.out / 'gpu_speed.md'}")
    errors = [r for r in rows if r.status.startswith("error") and (args.strict or r.backend != "compile")]
    for r in errors:
        print(f"gpu_speed: FAILED {r.model} {r.backend}: {r.status}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
