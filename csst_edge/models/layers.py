"""Building blocks shared by the segmentation models.

Everything here must trace into a clean ONNX graph (docs/design.md section 4). In particular
`adaptive_avg_pool2d_exact` replaces `F.adaptive_avg_pool2d`, whose ONNX export fails when the output size does
not divide the input size, the normal case for pyramid pooling at deployment resolutions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize with align_corners=False: the one resize convention used by every model and by the loss."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class ConvBNReLU(nn.Sequential):
    """Conv (no bias: BN has one) + BatchNorm + optional ReLU, with 'same' padding for odd kernels."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        relu: bool = True,
    ):
        padding = dilation * (kernel_size - 1) // 2
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class DepthwiseSeparableConv(nn.Sequential):
    """3x3 depthwise + 1x1 pointwise, each with BN + ReLU (MobileNet-v1 style, as in Fast-SCNN)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__(
            ConvBNReLU(in_channels, in_channels, 3, stride, groups=in_channels),
            ConvBNReLU(in_channels, out_channels, 1),
        )


class InvertedResidual(nn.Module):
    """MobileNet-v2 bottleneck: 1x1 expand, 3x3 depthwise, linear 1x1 project; residual when shapes allow."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, expansion: int = 6):
        super().__init__()
        hidden = in_channels * expansion
        self.use_residual = stride == 1 and in_channels == out_channels
        self.block = nn.Sequential(
            ConvBNReLU(in_channels, hidden, 1),
            ConvBNReLU(hidden, hidden, 3, stride, groups=hidden),
            ConvBNReLU(hidden, out_channels, 1, relu=False),  # linear bottleneck: ReLU here destroys information
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


class SegmentationHead(nn.Sequential):
    """3x3 ConvBNReLU, dropout, then the 1x1 `classifier` conv that `reset_classifier` swaps out."""

    def __init__(self, in_channels: int, mid_channels: int, num_classes: int, dropout: float = 0.1):
        super().__init__()
        self.conv = ConvBNReLU(in_channels, mid_channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(mid_channels, num_classes, 1)


# --- exact, exportable adaptive average pooling -----------------------------------------------------------------


def averaging_matrix(
    in_size: int | torch.Tensor,
    out_size: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The (out_size, in_size) matrix whose row i averages the window adaptive_avg_pool uses for output i.

    PyTorch's bins are [floor(i * in / out), ceil((i + 1) * in / out)); they overlap when out does not divide in,
    which is exactly why no fixed-kernel avg_pool can reproduce them. Built with tensor ops from `in_size`, so
    under ONNX tracing (where sizes are tensors) the matrix is recomputed from the input's shape at run time.
    """
    i = torch.arange(out_size, device=device)
    j = torch.arange(in_size, device=device)
    # all operands are non-negative, so truncating division is floor division (and exports to a plain Div)
    start = torch.div(i * in_size, out_size, rounding_mode="trunc")
    end = torch.div((i + 1) * in_size + (out_size - 1), out_size, rounding_mode="trunc")  # ceil
    inside = (j[None, :] >= start[:, None]) & (j[None, :] < end[:, None])
    return inside.to(dtype) / (end - start)[:, None].to(dtype)


def adaptive_avg_pool2d_exact(x: torch.Tensor, output_size: int | tuple[int, int]) -> torch.Tensor:
    """Same numbers as F.adaptive_avg_pool2d, exported as ops every runtime has (ReduceMean, MatMul, Range...).

    Global pooling is a mean; any other size is rows @ x @ cols.T with averaging matrices computed from the
    input's shape. That is exact for every input size, including sizes the bins do not divide, and it stays
    exact when an ONNX graph is exported with dynamic height / width (fixed avg_pool kernels would not).
    """
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    if out_h == 1 and out_w == 1:
        return x.mean(dim=(-2, -1), keepdim=True)
    rows = averaging_matrix(x.shape[-2], out_h, x.dtype, x.device)
    cols = averaging_matrix(x.shape[-1], out_w, x.dtype, x.device)
    return torch.matmul(torch.matmul(rows, x), cols.transpose(0, 1))


class PyramidPooling(nn.Module):
    """PSPNet / Fast-SCNN pyramid pooling: pool to each bin size, 1x1 conv to in/4 channels, upsample, concat
    with the input, fuse with a 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int, bins: Sequence[int] = (1, 2, 3, 6)):
        super().__init__()
        self.bins = tuple(bins)
        branch_channels = in_channels // len(self.bins)
        self.branches = nn.ModuleList(ConvBNReLU(in_channels, branch_channels, 1) for _ in self.bins)
        self.fuse = ConvBNReLU(in_channels + branch_channels * len(self.bins), out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [
            resize(branch(adaptive_avg_pool2d_exact(x, b)), size)
            for b, branch in zip(self.bins, self.branches, strict=True)
        ]
        return self.fuse(torch.cat([x, *pooled], dim=1))


class SummedPyramidPooling(nn.Module):
    """ICNet's parameter-free pyramid pooling: the input plus each pooled-and-upsampled map (no convs)."""

    def __init__(self, bins: Sequence[int] = (1, 2, 3, 6)):
        super().__init__()
        self.bins = tuple(bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        out = x
        for b in self.bins:
            out = out + resize(adaptive_avg_pool2d_exact(x, b), size)
        return out
