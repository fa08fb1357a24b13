"""Torch-free edge runtime: exported-model backends (ONNX Runtime, TensorRT) and their metadata.

Nothing here may import torch, `csst_edge.train` or `csst_edge.models`: the vehicle has numpy, OpenCV and
ONNX Runtime / TensorRT only (tests/test_export.py checks it in a fresh interpreter).
"""

from csst_edge.runtime.backends import (
    Backend,
    BackendError,
    OnnxRuntimeBackend,
    TensorRTBackend,
    available_providers,
    load_backend,
    predict_labels,
)
from csst_edge.runtime.model_meta import ModelMeta, ModelMetaError, read_model_meta

__all__ = [
    "Backend",
    "BackendError",
    "ModelMeta",
    "ModelMetaError",
    "OnnxRuntimeBackend",
    "TensorRTBackend",
    "available_providers",
    "load_backend",
    "predict_labels",
    "read_model_meta",
]
