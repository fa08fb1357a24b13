"""Inference backends for exported models: ONNX Runtime (CPU / CUDA / TensorRT execution providers) and
TensorRT engines. Torch-free: the vehicle has numpy, OpenCV, ONNX Runtime and/or TensorRT only.

    backend = load_backend("model.onnx")          # or "model.engine"
    labels = backend.infer(frames)                 # frames: N x H x W x 3 (or H x W x 3) uint8 RGB

Every backend takes frames as decoded (NHWC uint8 RGB) and transposes for an NCHW model itself; resizing to the
model's input size is the caller's job (`backend.meta.input_height/width`), so the caller decides how.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from csst_edge.errors import CsstError
from csst_edge.runtime.model_meta import ModelMeta, read_onnx_metadata, read_sidecar

ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
# The backend names every command uses (`runtime run --backend`, `predict --backend`, `bench --backends`):
# ort-* run an ONNX model on an ONNX Runtime execution provider, trt runs a TensorRT engine (TensorRTBackend).
ORT_BACKENDS = {
    "ort-trt": "TensorrtExecutionProvider",
    "ort-cuda": "CUDAExecutionProvider",
    "ort-cpu": "CPUExecutionProvider",
}
ENGINE_BACKEND = "trt"
OPENVINO_BACKEND = "openvino"  # the same ONNX file through OpenVINO (runtime/openvino_backend.py)
PROVIDER_ALIASES = {
    **ORT_BACKENDS,
    # the old `runtime run --providers` spellings
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}
# preferred order when the caller names none: fastest first, CPU always last
DEFAULT_PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class BackendError(CsstError):
    """A model cannot be loaded or run by the requested backend; the message names the file and the reason."""


class Backend:
    """Common interface: `.meta`, `.name`, `.infer(frames)`."""

    name = "backend"
    meta: ModelMeta
    path: Path

    def infer(self, frames: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _open_model(self, model_path: str | os.PathLike, meta: ModelMeta | None) -> None:
        """`path` and `meta` of an ONNX model file (its metadata_props unless `meta` is given)."""
        self.path = Path(model_path)
        if not self.path.is_file():
            raise BackendError(f"{self.path}: model file not found")
        self.meta = meta or read_onnx_metadata(self.path)

    def _prepare(self, frames: np.ndarray) -> np.ndarray:
        """HxWx3 or NxHxWx3 uint8 → the model's input tensor (layout, contiguous)."""
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise BackendError(f"{self.path}: expected frames N x H x W x 3 (RGB), got shape {frames.shape}")
        if frames.dtype != np.uint8:
            raise BackendError(f"{self.path}: expected uint8 frames, got {frames.dtype}")
        m = self.meta
        n, h, w = frames.shape[:3]
        if not m.dynamic:
            if (h, w) != (m.input_height, m.input_width):
                raise BackendError(
                    f"{self.path}: model input is {m.input_height}x{m.input_width}, frames are {h}x{w} "
                    "(resize them, or export with --dynamic)"
                )
            if m.batch and n != m.batch:
                raise BackendError(f"{self.path}: model batch is {m.batch}, got {n} frame(s)")
        if m.input_layout == "nchw":
            frames = frames.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(frames)


# ----------------------------------------------------------------------------------------------- ORT
def available_providers() -> list[str]:
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


def resolve_providers(providers: Sequence[str] | str | None) -> list[str]:
    """Short names (cpu, cuda, tensorrt) or full provider names → the available ones, in the given order.

    A named provider that this onnxruntime build lacks is an error (silently running on CPU would make a
    benchmark lie); with no names, the fastest available ones are used.
    """
    available = available_providers()
    if providers is None:
        return [p for p in DEFAULT_PROVIDER_ORDER if p in available] or ["CPUExecutionProvider"]
    if isinstance(providers, str):
        providers = [p.strip() for p in providers.split(",") if p.strip()]
    resolved = []
    for p in providers:
        full = PROVIDER_ALIASES.get(p.lower(), p)
        if full not in available:
            raise BackendError(
                f"execution provider {p!r} is not available in this onnxruntime "
                f"(available: {', '.join(available) or 'none'})"
            )
        resolved.append(full)
    if "CPUExecutionProvider" not in resolved:
        resolved.append("CPUExecutionProvider")  # nodes the GPU providers reject fall back to CPU
    return resolved


class OnnxRuntimeBackend(Backend):
    """An ONNX model in an `onnxruntime.InferenceSession`.

    `provider_options` maps a provider (short or full name) to its options, e.g.
    `{"tensorrt": {"trt_fp16_enable": True, "trt_engine_cache_enable": True}}`. `session_config` entries go to
    `SessionOptions.add_session_config_entry`, e.g. `{"session.intra_op.allow_spinning": "0"}` (the runtime sets
    it: spinning worker threads starve the capture thread on a small CPU).
    """

    name = "onnxruntime"

    def __init__(
        self,
        model_path: str | os.PathLike,
        providers: Sequence[str] | str | None = None,
        threads: int | None = None,
        provider_options: dict[str, dict] | None = None,
        meta: ModelMeta | None = None,
        session_config: dict[str, str] | None = None,
    ):
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendError("onnxruntime is not installed (pip install onnxruntime or onnxruntime-gpu)") from None
        self._open_model(model_path, meta)
        self.providers = resolve_providers(providers)
        options = {PROVIDER_ALIASES.get(k.lower(), k): v for k, v in (provider_options or {}).items()}
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            so.intra_op_num_threads = int(threads)
            so.inter_op_num_threads = 1
        for key, value in (session_config or {}).items():
            so.add_session_config_entry(key, str(value))
        try:
            self.session = ort.InferenceSession(
                str(self.path),
                sess_options=so,
                providers=self.providers,
                provider_options=[options.get(p, {}) for p in self.providers],
            )
        except Exception as e:
            raise BackendError(
                f"{self.path}: onnxruntime cannot load it ({type(e).__name__}: {str(e)[:300]})"
            ) from None
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.name = "ort-" + {
            "CPUExecutionProvider": "cpu",
            "CUDAExecutionProvider": "cuda",
            "TensorrtExecutionProvider": "trt",
        }.get(self.session.get_providers()[0], "other")

    def infer(self, frames: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: self._prepare(frames)})[0]

    def run_raw(self, tensor: np.ndarray) -> np.ndarray:
        """Run on an input already in the model's layout (benchmarks: no per-call transpose)."""
        return self.session.run([self.output_name], {self.input_name: tensor})[0]


# ------------------------------------------------------------------------------------------- TensorRT
def _cuda_api():
    """(name, module) of a CUDA runtime binding: cuda-python (new or old layout) or pycuda; else a clear error."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6

        return "cuda-python", cudart
    except ImportError:
        pass
    try:
        from cuda import cudart  # older cuda-python

        return "cuda-python", cudart
    except ImportError:
        pass
    try:
        import pycuda.driver as cuda

        return "pycuda", cuda
    except ImportError:
        pass
    raise BackendError("TensorRT inference needs a CUDA binding: pip install cuda-python (or pycuda)")


def _check(result):
    """cuda-python calls return (err, *values); raise on a non-zero err, return the values."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise BackendError(f"CUDA call failed: {err}")
    return values[0] if len(values) == 1 else values


class _CudaPython:
    def __init__(self, cudart):
        self.rt = cudart
        self.stream = _check(cudart.cudaStreamCreate())

    def malloc(self, nbytes: int) -> int:
        return int(_check(self.rt.cudaMalloc(max(1, nbytes))))

    def free(self, ptr: int) -> None:
        self.rt.cudaFree(ptr)

    def h2d(self, dst: int, src: np.ndarray) -> None:
        _check(
            self.rt.cudaMemcpyAsync(
                dst, src.ctypes.data, src.nbytes, self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream
            )
        )

    def d2h(self, dst: np.ndarray, src: int) -> None:
        _check(
            self.rt.cudaMemcpyAsync(
                dst.ctypes.data, src, dst.nbytes, self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream
            )
        )

    def stream_handle(self) -> int:
        return int(self.stream)

    def sync(self) -> None:
        _check(self.rt.cudaStreamSynchronize(self.stream))

    def close(self) -> None:
        self.rt.cudaStreamDestroy(self.stream)


class _PyCuda:
    def __init__(self, cuda):
        import pycuda.autoinit  # noqa: F401  (creates the context)

        self.cuda = cuda
        self.stream = cuda.Stream()
        self._allocs: dict[int, object] = {}

    def malloc(self, nbytes: int) -> int:
        buf = self.cuda.mem_alloc(max(1, nbytes))
        self._allocs[int(buf)] = buf
        return int(buf)

    def free(self, ptr: int) -> None:
        buf = self._allocs.pop(ptr, None)
        if buf is not None:
            buf.free()

    def h2d(self, dst: int, src: np.ndarray) -> None:
        self.cuda.memcpy_htod_async(dst, src, self.stream)

    def d2h(self, dst: np.ndarray, src: int) -> None:
        self.cuda.memcpy_dtoh_async(dst, src, self.stream)

    def stream_handle(self) -> int:
        return int(self.stream.handle)

    def sync(self) -> None:
        self.stream.synchronize()

    def close(self) -> None:
        pass


class TensorRTBackend(Backend):
    """A serialised TensorRT engine (TensorRT 10 API: named I/O tensors, `execute_async_v3`).

    Metadata comes from the sidecar JSON written by `csst-edge export tensorrt`. Device buffers are allocated
    for the current input shape and re-allocated only when it grows.
    """

    name = "trt"

    def __init__(self, engine_path: str | os.PathLike, meta: ModelMeta | None = None):
        try:
            import tensorrt as trt
        except ImportError as e:
            raise BackendError(
                f"TensorRT is not importable ({e}); install it (Jetson: it ships with JetPack)"
            ) from None
        self.trt = trt
        self.path = Path(engine_path)
        if not self.path.is_file():
            raise BackendError(f"{self.path}: engine file not found")
        self.meta = meta or read_sidecar(self.path)
        kind, api = _cuda_api()
        self.cuda = _CudaPython(api) if kind == "cuda-python" else _PyCuda(api)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise BackendError(
                f"{self.path}: TensorRT cannot deserialise it (built by another TensorRT version "
                "or for another GPU? rebuild it on this device)"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(self.inputs) != 1 or not self.outputs:
            raise BackendError(
                f"{self.path}: expected one input and at least one output, got {self.inputs} / {self.outputs}"
            )
        self.input_name, self.output_name = self.inputs[0], self.outputs[0]
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, capacity in bytes)

    def _device_buffer(self, name: str, nbytes: int) -> int:
        ptr, capacity = self._buffers.get(name, (0, 0))
        if nbytes > capacity:
            if ptr:
                self.cuda.free(ptr)
            ptr, capacity = self.cuda.malloc(nbytes), nbytes
            self._buffers[name] = (ptr, capacity)
        return ptr

    def infer(self, frames: np.ndarray) -> np.ndarray:
        return self.run_raw(self._prepare(frames))

    def run_raw(self, tensor: np.ndarray) -> np.ndarray:
        trt = self.trt
        tensor = np.ascontiguousarray(tensor, dtype=trt.nptype(self.engine.get_tensor_dtype(self.input_name)))
        if not self.context.set_input_shape(self.input_name, tuple(tensor.shape)):
            raise BackendError(f"{self.path}: input shape {tuple(tensor.shape)} is outside the engine's profile")
        in_ptr = self._device_buffer(self.input_name, tensor.nbytes)
        self.context.set_tensor_address(self.input_name, in_ptr)
        host_outputs = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            host = np.empty(shape, dtype=trt.nptype(self.engine.get_tensor_dtype(name)))
            self.context.set_tensor_address(name, self._device_buffer(name, host.nbytes))
            host_outputs[name] = host
        self.cuda.h2d(in_ptr, tensor)
        if not self.context.execute_async_v3(self.cuda.stream_handle()):
            raise BackendError(f"{self.path}: TensorRT execution failed")
        for name, host in host_outputs.items():
            self.cuda.d2h(host, self._buffers[name][0])
        self.cuda.sync()
        return host_outputs[self.output_name]

    def close(self) -> None:
        for ptr, _ in self._buffers.values():
            self.cuda.free(ptr)
        self._buffers.clear()
        self.cuda.close()


# -------------------------------------------------------------------------------------------- factory
def backend_providers(model_path: str | os.PathLike, backend: str | Sequence[str] | None) -> list[str] | None:
    """`--backend` names (comma-separated: a preference order) → the ONNX Runtime providers to ask for, or None
    for the default (the fastest available; an engine has no providers). The names must fit the model: ort-trt,
    ort-cuda, ort-cpu for an .onnx, trt for a TensorRT engine."""
    if backend is None:
        return None
    names = [b.strip().lower() for b in (backend.split(",") if isinstance(backend, str) else backend) if b.strip()]
    if not names:
        return None
    choices = f"{', '.join([*ORT_BACKENDS, OPENVINO_BACKEND])} (ONNX models) or {ENGINE_BACKEND} (TensorRT engines)"
    unknown = [n for n in names if n not in ORT_BACKENDS and n not in (ENGINE_BACKEND, OPENVINO_BACKEND)]
    if unknown:
        raise BackendError(f"--backend: unknown backend {', '.join(unknown)}; choose from {choices}")
    path = Path(model_path)
    if path.suffix.lower() in ENGINE_SUFFIXES:
        if names != [ENGINE_BACKEND]:
            raise BackendError(f"{path}: a TensorRT engine runs on the {ENGINE_BACKEND} backend only, not {backend}")
        return None
    if ENGINE_BACKEND in names:
        raise BackendError(
            f"--backend {ENGINE_BACKEND} runs a TensorRT engine (`csst-edge export tensorrt`); "
            f"for the ONNX model {path.name} use ort-trt"
        )
    if OPENVINO_BACKEND in names:
        if names != [OPENVINO_BACKEND]:
            raise BackendError(f"--backend {OPENVINO_BACKEND} runs on its own, not in a list with {backend}")
        return [OPENVINO_BACKEND]
    return [ORT_BACKENDS[n] for n in names]


def load_backend(
    model_path: str | os.PathLike, providers: Sequence[str] | str | None = None, threads: int | None = None, **kwargs
) -> Backend:
    """`.onnx` → OnnxRuntimeBackend (providers by availability unless named; `openvino` → OpenVinoBackend);
    `.engine/.plan/.trt` → TensorRTBackend."""
    path = Path(model_path)
    suffix = path.suffix.lower()
    wanted = [providers] if isinstance(providers, str) else list(providers or [])
    if suffix in ONNX_SUFFIXES and [p.lower() for p in wanted] == [OPENVINO_BACKEND]:
        return OpenVinoBackend(path, threads=threads, meta=kwargs.get("meta"))
    if suffix in ONNX_SUFFIXES:
        return OnnxRuntimeBackend(path, providers=providers, threads=threads, **kwargs)
    if suffix in ENGINE_SUFFIXES:
        return TensorRTBackend(path, **kwargs)
    raise BackendError(f"{path}: unknown model type {suffix!r} (expected {', '.join(ONNX_SUFFIXES + ENGINE_SUFFIXES)})")


def predict_labels(output: np.ndarray, meta: ModelMeta) -> np.ndarray:
    """Class ids N x H x W (uint8) from any output kind."""
    if meta.output_kind == "labels":
        return output.astype(np.uint8, copy=False)
    return output.argmax(axis=1).astype(np.uint8)


# -------------------------------------------------------------------------------------------- OpenVINO
# the same exported ONNX file (FP32, or the QDQ INT8 model of `export int8`) through OpenVINO: a second CPU backend
def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


class OpenVinoBackend(Backend):
    """An ONNX model compiled by OpenVINO for the CPU, latency hint, `threads` inference threads."""

    name = "openvino"

    def __init__(
        self,
        model_path: str | os.PathLike,
        threads: int | None = None,
        meta: ModelMeta | None = None,
        device: str = "CPU",
    ):
        try:
            import openvino as ov
        except ImportError:
            raise BackendError("openvino is not installed (pip install openvino)") from None
        self._open_model(model_path, meta)
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            core = ov.Core()
            self.compiled = core.compile_model(core.read_model(str(self.path)), device, config)
        except Exception as e:  # OpenVINO raises RuntimeError subclasses with long C++ messages
            raise BackendError(f"{self.path}: OpenVINO cannot load it ({type(e).__name__}: {str(e)[:300]})") from None
        self.request = self.compiled.create_infer_request()
        self.output = self.compiled.output(0)

    def infer(self, frames: np.ndarray) -> np.ndarray:
        return self.run_raw(self._prepare(frames))

    def run_raw(self, tensor: np.ndarray) -> np.ndarray:
        """Run on an input already in the model's layout (benchmarks: no per-call transpose)."""
        result = self.request.infer({0: tensor})
        return np.array(result[self.output])  # a copy: the request's buffer is reused by the next call
