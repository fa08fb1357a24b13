"""ONNX → TensorRT engine (TensorRT 10 Python API), with a sidecar JSON carrying the model metadata.

    build_engine("student.onnx", "student.engine", fp16=True, timing_cache="trt.cache")

- FP16: `BuilderFlag.FP16` lets TensorRT pick half-precision kernels where faster.
- INT8: from a QDQ model made by `quantize_int8(..., types="S8S8", symmetric_activations=True)` (explicit
  quantisation: the scales are in the graph, no calibrator); `BuilderFlag.INT8` is set for TensorRT versions that
  still want it for QDQ networks.
- Dynamic inputs need an optimisation profile: min/opt/max shapes (defaults derived from the export size).
- The timing cache file is loaded when present and written back after the build: rebuilding the same model (or
  a similar one) on the same device then skips most kernel timing.
Engines are specific to the GPU and TensorRT version they were built with: build on the Jetson itself.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from csst_edge.export.errors import ExportError
from csst_edge.fileio import atomic_write_bytes
from csst_edge.runtime.model_meta import ModelMeta, from_metadata_props, write_sidecar


def tensorrt_available() -> tuple[bool, str]:
    """(importable, reason or version)."""
    try:
        import tensorrt as trt
    except Exception as e:  # ImportError, or an OSError from a missing libnvinfer
        return False, f"tensorrt is not importable ({type(e).__name__}: {e})"
    return True, f"TensorRT {trt.__version__}"


@dataclass
class EngineResult:
    path: Path
    sidecar: Path
    meta: ModelMeta
    seconds: float
    size_bytes: int
    precision: str
    shapes: dict = field(default_factory=dict)
    timing_cache: Path | None = None
    trt_version: str = ""

    def summary(self) -> str:
        return (
            f"{self.path} ({self.size_bytes / 2**20:.1f} MiB, {self.precision}, TensorRT {self.trt_version}) "
            f"in {self.seconds:.0f}s; metadata in {self.sidecar.name}"
        )


def _shape(value: Sequence[int] | str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [int(v) for v in value.lower().replace("x", ",").split(",") if v.strip()]
    return tuple(int(v) for v in value)


def default_profile(meta: ModelMeta) -> tuple[tuple, tuple, tuple]:
    """min/opt/max for a dynamic model: batch 1..4, half to double the export size (opt = export size)."""
    h, w = meta.export_height or 512, meta.export_width or 1024
    opt = meta.input_shape(1, h, w)
    lo = meta.input_shape(1, max(32, h // 2 // 32 * 32), max(32, w // 2 // 32 * 32))
    hi = meta.input_shape(4, h * 2, w * 2)
    return lo, opt, hi


def build_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike,
    fp16: bool = False,
    int8: bool = False,
    min_shape: Sequence[int] | str | None = None,
    opt_shape: Sequence[int] | str | None = None,
    max_shape: Sequence[int] | str | None = None,
    workspace_gib: float = 2.0,
    timing_cache: str | os.PathLike | None = None,
    verbose: bool = False,
) -> EngineResult:
    """Build and serialise an engine; write `<engine>.json` with the ONNX model's metadata."""
    import onnx

    ok, reason = tensorrt_available()
    if not ok:
        raise ExportError(
            f"cannot build a TensorRT engine: {reason}. Build on the target device (Jetson: "
            "JetPack ships TensorRT), or run the ONNX model with onnxruntime"
        )
    import tensorrt as trt

    t0 = time.perf_counter()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise ExportError(f"{onnx_path}: ONNX file not found")
    try:
        proto = onnx.load(str(onnx_path), load_external_data=False)
        meta = from_metadata_props({p.key: p.value for p in proto.metadata_props}, str(onnx_path))
    except Exception as e:
        raise ExportError(f"{onnx_path}: not an exported csst-edge ONNX model ({e})") from None
    if int8 and meta.precision != "int8":
        raise ExportError(
            f"{onnx_path}: --int8 needs a QDQ model from `csst-edge export int8 --for-tensorrt` "
            f"(this one is {meta.precision})"
        )

    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors[:500]}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    precision = "fp32"
    if fp16:
        if not hasattr(trt.BuilderFlag, "FP16"):  # removed in TensorRT 11 (strongly typed networks only)
            raise ExportError(f"TensorRT {trt.__version__} has no BuilderFlag.FP16; export an FP16 ONNX model instead")
        config.set_flag(trt.BuilderFlag.FP16)
        precision = "fp16"
    if int8:
        if hasattr(trt.BuilderFlag, "INT8"):  # TensorRT 10 wants it for QDQ networks; 11 reads the Q/DQ nodes alone
            config.set_flag(trt.BuilderFlag.INT8)
        precision = "int8" + ("+fp16" if fp16 else "")

    shapes = {}
    inp = network.get_input(0)
    dims = tuple(inp.shape)
    if any(d < 0 for d in dims):
        lo, opt, hi = default_profile(meta)
        lo, opt, hi = _shape(min_shape) or lo, _shape(opt_shape) or opt, _shape(max_shape) or hi
        for s in (lo, opt, hi):
            if len(s) != len(dims) or any(d >= 0 and d != v for d, v in zip(dims, s, strict=True)):
                raise ExportError(f"profile shape {s} does not fit input {inp.name} {dims}")
        profile = builder.create_optimization_profile()
        profile.set_shape(inp.name, lo, opt, hi)
        config.add_optimization_profile(profile)
        shapes = {"min": list(lo), "opt": list(opt), "max": list(hi)}
    elif min_shape or opt_shape or max_shape:
        raise ExportError(
            f"{onnx_path}: the model has a static input {dims}; min/opt/max shapes need a --dynamic export"
        )

    cache = None
    cache_path = Path(timing_cache) if timing_cache else None
    if cache_path is not None:
        blob = cache_path.read_bytes() if cache_path.is_file() else b""
        cache = config.create_timing_cache(blob)
        config.set_timing_cache(cache, ignore_mismatch=False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"{onnx_path}: TensorRT engine build failed (run with --verbose for the builder log)")
    data = bytes(serialized)
    atomic_write_bytes(engine_path, data)
    if cache_path is not None:
        atomic_write_bytes(cache_path, bytes(config.get_timing_cache().serialize()))

    meta.precision = precision
    meta.extra = {
        **meta.extra,
        "tensorrt": {
            "version": trt.__version__,
            "profile": shapes,
            "source_onnx": onnx_path.name,
            "workspace_gib": workspace_gib,
        },
    }
    if shapes:
        meta.dynamic = True
    sidecar = write_sidecar(engine_path, meta)
    return EngineResult(
        engine_path, sidecar, meta, time.perf_counter() - t0, len(data), precision, shapes, cache_path, trt.__version__
    )
