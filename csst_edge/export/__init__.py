"""ONNX export + verification, ONNX Runtime INT8 quantisation, TensorRT engine build, benchmarks.

Import the submodules directly (`csst_edge.export.onnx_export`, `.verify`, `.quantize`, `.tensorrt_build`,
`.bench`, `.predict`): this package needs torch and onnx, the runtime that consumes its output
(`csst_edge.runtime`) does not; `.predict` imports torch only for a checkpoint.
"""

from csst_edge.export.errors import ExportError

__all__ = ["ExportError"]
