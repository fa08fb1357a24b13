"""OpenVINO as a second CPU backend: the same exported ONNX file (FP32, or the QDQ INT8 model of `export int8`,
which OpenVINO runs with its own INT8 kernels), torch-free like the others.

    backend = OpenVinoBackend("student.onnx", threads=2)
    probs = backend.infer(frame)            # HxWx3 uint8 RGB, as for ONNX Runtime

Why a second CPU backend: ONNX Runtime's INT8 path on x86 is only as fast as its kernels for the ops a model
uses; OpenVINO fuses and schedules for Intel CPUs (VNNI, AMX) on its own. `bench` measures both on one machine.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from csst_edge.runtime.backends import Backend, BackendError
from csst_edge.runtime.model_meta import ModelMeta, read_onnx_metadata


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
        self.path = Path(model_path)
        if not self.path.is_file():
            raise BackendError(f"{self.path}: model file not found")
        self.meta = meta or read_onnx_metadata(self.path)
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
