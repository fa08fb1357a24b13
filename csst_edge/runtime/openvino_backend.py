"""OpenVINO as a second CPU backend: the same exported ONNX file (FP32, or the QDQ INT8 model of `export int8`,
which OpenVINO runs with its own INT8 kernels), torch-free like the others. The class lives in backends.py (beside
the backend it stands in for); this module is its documented import path.

    backend = OpenVinoBackend("student.onnx", threads=2)
    probs = backend.infer(frame)            # HxWx3 uint8 RGB, as for ONNX Runtime
"""

from csst_edge.runtime.backends import OpenVinoBackend, openvino_available

__all__ = ["OpenVinoBackend", "openvino_available"]
