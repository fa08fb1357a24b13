"""Errors of the export step (a failed verification, an unusable ONNX file, a missing toolchain)."""

from csst_edge.errors import CsstError


class ExportError(CsstError):
    """An export, verification, quantisation or engine build failed; the message names the file and the check."""
