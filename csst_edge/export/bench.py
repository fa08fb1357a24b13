"""Latency / FPS / memory (and optionally mIoU) of models across backends and input sizes, one table.

Models are checkpoints (`.pt`), exported models (`.onnx`, `.engine`) or registered architecture names (random
weights: latency only). A checkpoint is exported to ONNX per size (into `out_dir/onnx/`) for the ONNX Runtime
and TensorRT rows, so every backend runs the same computation: uint8 frames in, normalisation in the model,
logits out. A backend that cannot run here gives a row whose status says why ("skipped: ...") instead of failing.

Latency is wall-clock per batch after warm-up (host→device copies included for GPU backends, as on the vehicle).
Memory is the peak resident-set growth of this process while the backend is loaded and running (CPU backends),
or the CUDA caching allocator's peak (PyTorch on CUDA). Treat it as indicative: allocator caches are not returned
to the OS between rows.
"""

from __future__ import annotations

import gc
import os
import platform
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from csst_edge.errors import ConfigError
from csst_edge.export.errors import ExportError
from csst_edge.runtime.backends import ORT_BACKENDS
from csst_edge.sizes import parse_hw

BACKENDS = ("torch", "torch-compile", "ort-cpu", "ort-cuda", "ort-trt", "trt")
TORCH_BACKENDS = ("torch", "torch-compile")
ORT_PROVIDERS = dict(ORT_BACKENDS)  # the runtime's names: `runtime run --backend` and `predict --backend` take them too
RANDOM_NUM_CLASSES = 19


@dataclass
class BenchRow:
    model: str
    backend: str
    size: str
    batch: int
    status: str = "ok"
    precision: str = "fp32"
    arch: str | None = None
    file_mb: float | None = None
    mean_ms: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    fps: float | None = None
    peak_mem_mb: float | None = None
    mem_kind: str | None = None
    miou: float | None = None
    iters: int = 0
    setup_s: float | None = None  # load / export / compile / engine build time
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict:
        return asdict(self)


def parse_sizes(text: str, option: str = "--sizes") -> list[tuple[int, int]]:
    """'512x1024,1024x2048' → [(512, 1024), (1024, 2048)] (height x width)."""
    sizes = []
    for part in str(text).split(","):
        part = part.strip().lower()
        if not part:
            continue
        try:
            sizes.append(parse_hw(part, option, minimum=8, square=False))
        except ConfigError as e:
            raise ExportError(str(e)) from None
    if not sizes:
        raise ExportError("no sizes given (e.g. --sizes 512x1024,1024x2048)")
    return sizes


def parse_backends(text: str | Sequence[str] | None) -> list[str]:
    if text is None or text == "all":
        return list(BACKENDS)
    names = [b.strip().lower() for b in (text.split(",") if isinstance(text, str) else text) if b.strip()]
    unknown = [b for b in names if b not in BACKENDS]
    if unknown:
        raise ExportError(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
    return names


# ------------------------------------------------------------------------------------------------ memory
def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # peak, not current: best effort


class PeakRSS:
    """Samples this process's RSS in a background thread; `.peak_delta_mb` = peak minus the value at start."""

    def __init__(self, interval_s: float = 0.005):
        self.interval_s = interval_s
        self.base = self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            self._stop.wait(self.interval_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())

    @property
    def peak_delta_mb(self) -> float:
        return max(0, self.peak - self.base) / 2**20


# --------------------------------------------------------------------------------------------- timing
def time_calls(fn: Callable[[], object], warmup: int, iters: int, sync: Callable[[], None] | None = None) -> np.ndarray:
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    times = np.empty(iters)
    for i in range(iters):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times[i] = time.perf_counter() - t0
    return times


def fill_latency(row: BenchRow, times: np.ndarray) -> None:
    ms = times * 1000.0
    row.mean_ms, row.p50_ms = float(ms.mean()), float(np.percentile(ms, 50))
    row.p90_ms, row.p99_ms = float(np.percentile(ms, 90)), float(np.percentile(ms, 99))
    row.fps = float(row.batch * 1000.0 / row.mean_ms) if row.mean_ms > 0 else None
    row.iters = int(len(times))


# ----------------------------------------------------------------------------------------------- models
@dataclass
class ModelSource:
    """One entry of `models`: what it is and how to get each representation of it."""

    label: str
    kind: str  # "checkpoint", "random", "onnx", "engine"
    path: Path | None
    arch: str | None = None
    file_mb: float | None = None
    state: dict | None = None  # loaded checkpoint (kind checkpoint / random)
    meta: object = None  # ModelMeta of an onnx / engine

    def torch_model(self):
        from csst_edge.models.checkpoint import model_from_checkpoint

        model, _ = model_from_checkpoint(self.state)
        return model


def resolve_model(spec: str | os.PathLike) -> ModelSource:
    path = Path(spec)
    suffix = path.suffix.lower()
    if path.is_file():
        size_mb = path.stat().st_size / 2**20
        if suffix in (".pt", ".pth"):
            from csst_edge.models.checkpoint import load_checkpoint

            state = load_checkpoint(path)
            return ModelSource(path.name, "checkpoint", path, str(state["arch"]), size_mb, state)
        from csst_edge.runtime.model_meta import read_model_meta

        kind = "onnx" if suffix == ".onnx" else "engine"
        if kind == "engine" and suffix not in (".engine", ".plan", ".trt"):
            raise ExportError(f"{path}: unknown model type {suffix!r} (expected .pt, .onnx or .engine)")
        meta = read_model_meta(path)
        return ModelSource(path.name, kind, path, meta.arch, size_mb, meta=meta)
    from csst_edge.models import list_models

    if str(spec) in list_models():
        from csst_edge.models import create_model

        model = create_model(str(spec), num_classes=RANDOM_NUM_CLASSES)
        state = {"model": model.state_dict(), "arch": str(spec), "num_classes": RANDOM_NUM_CLASSES}
        n_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        return ModelSource(f"{spec} (random)", "random", None, str(spec), n_bytes / 2**20, state)
    raise ExportError(f"{spec}: not a file, and not a registered model name ({', '.join(list_models())})")


# --------------------------------------------------------------------------------------------- runners
class _Skip(Exception):
    pass


def _torch_runner(
    source: ModelSource, backend: str, size, batch: int, threads: int, fp16: bool, row: BenchRow, device: str = "auto"
):
    import torch

    from csst_edge.export.deploy import DeployWrapper, torch_device
    from csst_edge.models.checkpoint import normalization

    if source.state is None:
        raise _Skip(f"needs a PyTorch checkpoint (.pt), got {source.kind}")
    device = torch_device(device)
    torch.set_num_threads(threads)
    mean, std = normalization(source.state)
    wrapper = DeployWrapper(source.torch_model(), mean, std, "nhwc", "logits").eval().to(device)
    if backend == "torch-compile":
        try:
            wrapper = torch.compile(wrapper)
        except Exception as e:
            raise _Skip(f"torch.compile unavailable ({type(e).__name__}: {str(e)[:120]})") from None
    use_half = fp16 and device.type == "cuda"
    if fp16 and not use_half:
        row.notes.append("fp16 needs CUDA: ran fp32")
    row.precision = "fp16" if use_half else "fp32"
    x = torch.from_numpy(_frames(batch, *size)).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else None

    def run():
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.float16, enabled=use_half):
            return wrapper(x)

    def predict(frame: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.float16, enabled=use_half):
            logits = wrapper(torch.from_numpy(np.repeat(frame[None], batch, 0)).to(device))
        return logits.argmax(1)[0].to(torch.uint8).cpu().numpy()

    return run, sync, predict, device.type == "cuda", lambda: None


def _onnx_for(source: ModelSource, size, batch: int, out_dir: Path) -> Path:
    """The ONNX model a row runs: the given one, or an export of the checkpoint at this size (cached)."""
    if source.kind == "onnx":
        m = source.meta
        if not m.dynamic and (m.input_height, m.input_width) != tuple(size):
            raise _Skip(f"static ONNX model is {m.input_height}x{m.input_width}, not {size[0]}x{size[1]}")
        if not m.dynamic and m.batch and m.batch != batch:
            raise _Skip(f"static ONNX model has batch {m.batch}, not {batch}")
        return source.path
    if source.kind == "engine":
        raise _Skip("a TensorRT engine runs only on the trt backend")
    from csst_edge.export.onnx_export import export_model_onnx, meta_from_checkpoint

    stem = source.path.stem if source.path else source.arch
    path = out_dir / "onnx" / f"{stem}_{size[0]}x{size[1]}_b{batch}.onnx"
    if not path.is_file():
        meta = meta_from_checkpoint(source.state, size[0], size[1], batch, False, "nhwc", "logits", 17, source.path)
        export_model_onnx(source.torch_model(), meta, path, verify=True, verify_count=1)
    return path


def _ort_runner(
    source: ModelSource, backend: str, size, batch: int, threads: int, fp16: bool, row: BenchRow, out_dir: Path
):
    from csst_edge.runtime.backends import OnnxRuntimeBackend, available_providers, predict_labels

    provider = ORT_PROVIDERS[backend]
    if provider not in available_providers():
        hint = "onnxruntime-gpu" if backend != "ort-cpu" else "onnxruntime"
        raise _Skip(
            f"onnxruntime has no {provider} here (available: {', '.join(available_providers())}; "
            f"install {hint} on a machine with the GPU stack)"
        )
    path = _onnx_for(source, size, batch, out_dir)
    options = {}
    if backend == "ort-trt":
        options = {
            "tensorrt": {
                "trt_fp16_enable": bool(fp16),
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(out_dir / "ort_trt_cache"),
            }
        }
    if fp16 and backend != "ort-trt":
        row.notes.append("fp16 applies to ort-trt / trt only: ran the fp32 model")
    be = OnnxRuntimeBackend(path, providers=[provider], threads=threads, provider_options=options)
    if be.session.get_providers()[0] != provider:
        raise _Skip(f"{provider} could not take the model (session fell back to {be.session.get_providers()[0]})")
    row.precision = be.meta.precision if not (fp16 and backend == "ort-trt") else "fp16"
    row.file_mb = path.stat().st_size / 2**20
    frames = _frames(batch, *_model_size(be.meta, size))
    x = be._prepare(frames)

    def predict(frame: np.ndarray) -> np.ndarray:
        return predict_labels(be.infer(np.repeat(frame[None], batch, 0)), be.meta)[0]

    return (lambda: be.run_raw(x)), None, predict, False, be.close


def _trt_runner(source: ModelSource, size, batch: int, fp16: bool, row: BenchRow, out_dir: Path):
    from csst_edge.export.tensorrt_build import build_engine, tensorrt_available
    from csst_edge.runtime.backends import TensorRTBackend, predict_labels

    ok, reason = tensorrt_available()
    if not ok:
        raise _Skip(reason)
    if source.kind == "engine":
        path = source.path
    else:
        onnx_path = _onnx_for(source, size, batch, out_dir)
        tag = "fp16" if fp16 else "fp32"
        path = out_dir / "engines" / f"{onnx_path.stem}_{tag}.engine"
        if not path.is_file():
            shapes = {}
            if source.kind == "onnx" and source.meta.dynamic:
                s = source.meta.input_shape(batch, *size)
                shapes = {"min_shape": s, "opt_shape": s, "max_shape": s}
            build_engine(
                onnx_path,
                path,
                fp16=fp16,
                int8=source.meta is not None and source.meta.precision == "int8",
                timing_cache=out_dir / "engines" / "timing.cache",
                **shapes,
            )
    be = TensorRTBackend(path)
    row.precision = be.meta.precision
    row.file_mb = path.stat().st_size / 2**20
    x = be._prepare(_frames(batch, *_model_size(be.meta, size)))

    def predict(frame: np.ndarray) -> np.ndarray:
        return predict_labels(be.infer(np.repeat(frame[None], batch, 0)), be.meta)[0]

    return (lambda: be.run_raw(x)), None, predict, False, be.close


def _backend_available(backend: str) -> bool:
    from csst_edge.export.tensorrt_build import tensorrt_available
    from csst_edge.runtime.backends import available_providers

    if backend in ORT_PROVIDERS:
        return ORT_PROVIDERS[backend] in available_providers()
    return backend == "trt" and tensorrt_available()[0]


def _model_size(meta, size):
    return (meta.input_height or size[0], meta.input_width or size[1])


def _frames(batch: int, h: int, w: int) -> np.ndarray:
    from csst_edge.export.frames import synthetic_frames

    return np.stack(synthetic_frames(batch, h, w, seed=1))


# ------------------------------------------------------------------------------------------------- run
def bench_one(
    source: ModelSource,
    backend: str,
    size,
    batch: int = 1,
    threads: int = 2,
    warmup: int = 5,
    iters: int = 50,
    fp16: bool = False,
    out_dir: Path | None = None,
    data=None,
    limit: int | None = None,
    split: str = "val",
    device: str = "auto",
) -> BenchRow:
    """One row. Never raises for an unavailable backend: the row's status says what happened."""
    out_dir = Path(out_dir or "bench")
    row = BenchRow(source.label, backend, f"{size[0]}x{size[1]}", batch, arch=source.arch, file_mb=source.file_mb)
    if source.kind == "engine" and backend != "trt":
        row.status = "skipped: a TensorRT engine runs only on the trt backend"
        return row
    close = lambda: None  # noqa: E731
    t0 = time.perf_counter()
    try:
        if backend not in TORCH_BACKENDS and source.kind in ("checkpoint", "random") and _backend_available(backend):
            _onnx_for(source, size, batch, out_dir)  # export outside the memory measurement (cached for later rows)
        with PeakRSS() as rss:
            cuda_torch = False
            if backend in TORCH_BACKENDS:
                run, sync, predict, cuda_torch, close = _torch_runner(
                    source, backend, size, batch, threads, fp16, row, device
                )
            elif backend in ORT_PROVIDERS:
                run, sync, predict, _, close = _ort_runner(source, backend, size, batch, threads, fp16, row, out_dir)
            else:
                run, sync, predict, _, close = _trt_runner(source, size, batch, fp16, row, out_dir)
            if cuda_torch:
                import torch

                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            run()  # first call: lazy init / compilation, reported as setup time
            row.setup_s = round(time.perf_counter() - t0, 3)
            times = time_calls(run, max(0, warmup - 1), iters, sync)
        fill_latency(row, times)
        if cuda_torch:
            row.peak_mem_mb, row.mem_kind = (torch.cuda.max_memory_allocated() - base) / 2**20, "cuda-allocated"
        else:
            row.peak_mem_mb, row.mem_kind = rss.peak_delta_mb, "rss-delta"
        if data is not None:
            row.miou = _row_miou(source, predict, size, data, limit, split, row)
    except _Skip as e:
        row.status = f"skipped: {e}"
    except Exception as e:  # a backend that fails on this model must not end the whole benchmark
        row.status = f"error: {type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}"
    finally:
        try:
            close()
        except Exception:
            pass
        gc.collect()
    return row


def _row_miou(source: ModelSource, predict, size, data, limit, split, row: BenchRow) -> float | None:
    from csst_edge.export.evaluation import evaluate_predictor
    from csst_edge.export.frames import dataset_info

    if source.kind == "random":
        row.notes.append("random weights: no mIoU")
        return None
    ds = dataset_info(data)
    n = source.state["num_classes"] if source.state else source.meta.num_classes
    if int(n) != ds.num_classes:
        row.notes.append(f"model has {n} classes, dataset {ds.num_classes}: no mIoU")
        return None
    return evaluate_predictor(predict, data, split, limit, tuple(size))["miou"]


def run_bench(
    models: Sequence[str | os.PathLike],
    sizes: Sequence[tuple[int, int]],
    batch: int = 1,
    threads: int = 2,
    warmup: int = 5,
    iters: int = 50,
    backends: Sequence[str] = BACKENDS,
    fp16: bool = False,
    data=None,
    limit: int | None = None,
    split: str = "val",
    out_dir: str | os.PathLike = "bench",
    on_row: Callable[[BenchRow], None] | None = None,
    device: str = "auto",
) -> list[BenchRow]:
    """Every model x size x backend; `device` is where the torch rows run (auto: CUDA when there is one)."""
    if not models:
        raise ExportError("no models given")
    if batch < 1 or iters < 1 or warmup < 0 or threads < 1:
        raise ExportError("batch, iters and threads must be >= 1 and warmup >= 0")
    out_dir = Path(out_dir)
    if device != "auto" and any(b in TORCH_BACKENDS for b in backends):
        from csst_edge.export.deploy import torch_device

        torch_device(device)  # a bad --device is one error up front, not a failed row per model
    sources = [resolve_model(m) for m in models]
    rows = []
    for source in sources:
        for size in sizes:
            for backend in backends:
                row = bench_one(
                    source, backend, size, batch, threads, warmup, iters, fp16, out_dir, data, limit, split, device
                )
                rows.append(row)
                if on_row is not None:
                    on_row(row)
    return rows


# ----------------------------------------------------------------------------------------------- report
# the CPU features that decide whether INT8 pays on a CPU (name in /proc/cpuinfo -> what a reader knows it as)
ISA_FEATURES = {
    "avx2": "AVX2",
    "avx512f": "AVX-512",
    "avx512_vnni": "AVX-512 VNNI",
    "avx_vnni": "AVX-VNNI",
    "avx512_bf16": "AVX-512 BF16",
    "amx_int8": "AMX-INT8",
    "amx_bf16": "AMX-BF16",
}


def cpu_info(cpuinfo: str | None = None) -> dict:
    """The CPU's model name and which of ISA_FEATURES it has ({feature: bool}), from /proc/cpuinfo (Linux); the
    features are None where it cannot be read."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return {"cpu_model": platform.processor() or platform.machine(), "isa": None}
    model, flags = None, set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    isa = {label: name in flags for name, label in ISA_FEATURES.items()}
    return {"cpu_model": model or platform.machine(), "isa": isa}


def isa_line(env: dict) -> str:
    """'AMD EPYC ..., AVX2 yes, AVX-512 VNNI yes, AMX-INT8 no' for a table's environment header."""
    isa = env.get("isa")
    if not isa:
        return f"CPU {env.get('cpu_model')}, ISA features unknown"
    shown = ("AVX2", "AVX-512", "AVX-512 VNNI", "AVX-VNNI", "AMX-INT8")
    return f"CPU {env.get('cpu_model')}: " + ", ".join(f"{k} {'yes' if isa.get(k) else 'no'}" for k in shown)


def environment(threads: int) -> dict:
    env = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        **cpu_info(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
    }
    for name in ("torch", "onnxruntime", "onnx", "tensorrt"):
        try:
            module = __import__(name)
            env[name] = getattr(module, "__version__", "?")
        except Exception:
            env[name] = None
    try:
        import torch

        env["cuda_device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:
        env["cuda_device"] = None
    return env


def _fmt(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


COLUMNS = (
    "model",
    "backend",
    "size",
    "batch",
    "precision",
    "file MB",
    "mean ms",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "FPS",
    "peak MB",
    "mIoU",
    "status",
)


def row_cells(row: BenchRow) -> list[str]:
    return [
        row.model,
        row.backend,
        row.size,
        str(row.batch),
        row.precision,
        _fmt(row.file_mb, 1),
        _fmt(row.mean_ms),
        _fmt(row.p50_ms),
        _fmt(row.p90_ms),
        _fmt(row.p99_ms),
        _fmt(row.fps, 1),
        _fmt(row.peak_mem_mb, 0),
        "-" if row.miou is None else f"{100 * row.miou:.2f}",
        row.status,
    ]


def markdown_table(rows: Sequence[BenchRow]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row_cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def rich_table(rows: Sequence[BenchRow], title: str = "benchmark"):
    from rich.table import Table

    table = Table(title=title)
    for c in COLUMNS:
        table.add_column(
            c,
            justify="left" if c in ("model", "backend", "size", "precision", "status") else "right",
            overflow="fold",
            no_wrap=c != "status" and c != "model",
        )
    for r in rows:
        cells = row_cells(r)
        style = None if r.ok else ("yellow" if r.status.startswith("skipped") else "red")
        table.add_row(*cells, style=style)
    return table


def write_report(
    rows: Sequence[BenchRow], out_dir: str | os.PathLike, settings: dict, name: str = "bench"
) -> tuple[Path, Path]:
    from csst_edge.fileio import atomic_write_json, atomic_write_text

    out_dir = Path(out_dir)
    json_path, md_path = out_dir / f"{name}.json", out_dir / f"{name}.md"
    atomic_write_json(
        json_path,
        {
            "settings": settings,
            "environment": environment(settings.get("threads", 0)),
            "rows": [r.to_dict() for r in rows],
        },
    )
    notes = [f"- {r.model} / {r.backend} / {r.size}: {'; '.join(r.notes)}" for r in rows if r.notes]
    text = (
        f"# {name}\n\n"
        + ", ".join(f"{k}: {v}" for k, v in settings.items())
        + f"\n\n{isa_line(environment(settings.get('threads', 0)))}\n\n"
        + markdown_table(rows)
        + ("\n" + "\n".join(notes) + "\n" if notes else "")
    )
    atomic_write_text(md_path, text)
    return json_path, md_path
