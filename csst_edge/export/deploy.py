"""The deployed computation as one module: uint8 frames in, normalisation, the network, logits / probabilities /
class ids out. Export traces it, verification and the benchmarks run it as the PyTorch reference."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from csst_edge.export.errors import ExportError
from csst_edge.models.device import resolve_device
from csst_edge.runtime.model_meta import INPUT_LAYOUTS, OUTPUT_KINDS


class DeployWrapper(nn.Module):
    """uint8 frames in, logits / probs / labels out: the whole deployed computation in one module.

    Normalisation `(x/255 - mean)/std` is written as one multiply-add per channel, which TensorRT and ORT fold
    into the first convolution. The cast comes before the transpose: TensorRT handles uint8 only at the I/O
    boundary and in casts.
    """

    def __init__(
        self,
        model: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        input_layout: str = "nhwc",
        output: str = "logits",
    ):
        super().__init__()
        if input_layout not in INPUT_LAYOUTS:
            raise ExportError(f"input_layout must be one of {', '.join(INPUT_LAYOUTS)}, got {input_layout!r}")
        if output not in OUTPUT_KINDS:
            raise ExportError(f"output must be one of {', '.join(OUTPUT_KINDS)}, got {output!r}")
        self.model, self.input_layout, self.output = model, input_layout, output
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std_t), persistent=False)
        self.register_buffer("shift", -mean_t / std_t, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.input_layout == "nhwc":
            x = x.permute(0, 3, 1, 2)
        x = x * self.scale + self.shift
        out = main_output(self.model(x))
        if out.shape[-2:] != x.shape[-2:]:
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        if self.output == "probs":
            return out.softmax(dim=1)
        if self.output == "labels":
            return out.argmax(dim=1).to(torch.uint8)
        return out


def main_output(out: Any) -> torch.Tensor:
    """Segmentation logits from a model that returns a tensor, a dict ('out') or a tuple (main output first)."""
    if isinstance(out, dict):
        return out["out"] if "out" in out else next(iter(out.values()))
    if isinstance(out, (tuple, list)):
        return out[0]
    return out


def torch_device(name: str = "auto"):
    """The one device rule (models.device.resolve_device), under the name the export modules use."""
    return resolve_device(name)
