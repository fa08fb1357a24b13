"""DeepLabV3+ (Chen et al., 2018): the teachers.

ResNet (dilated to output stride 16 or 8) ─ layer4 ─ ASPP ─ up to 1/4 ─┐
                                    layer1 (1/4) ─ 1x1 to 48 channels ─┴─ concat ─ 2 x 3x3 conv ─ classifier

With `aux=True` (default) an FCN head on layer3 adds one auxiliary output (weight 0.4, the usual mmsegmentation
recipe): it speeds up training from scratch, which is how the teachers are trained here. Inputs need H and W
divisible by 32 (16 for output_stride 16 would do; 32 keeps one rule for all models).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from csst_edge.errors import ConfigError
from csst_edge.models.backbones import build_backbone, output_stride_dilation
from csst_edge.models.base import SegmentationModel
from csst_edge.models.layers import ConvBNReLU, SegmentationHead, resize
from csst_edge.models.registry import register_model


class ImagePooling(nn.Module):
    """ASPP's image-level branch: global mean, 1x1 conv, broadcast back over the feature map.

    No BatchNorm here (conv with bias + ReLU instead): on a 1x1 map BN sees one value per channel per image and
    fails for batch 1, a batch size teachers with big crops do train with."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.conv(x.mean(dim=(2, 3), keepdim=True))
        return pooled.expand(-1, -1, x.shape[-2], x.shape[-1])  # bilinear upsampling of 1x1 is this broadcast


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1, three dilated 3x3 convs and image pooling, concatenated, 1x1."""

    def __init__(
        self, in_channels: int, out_channels: int = 256, rates: Sequence[int] = (6, 12, 18), dropout: float = 0.1
    ):
        super().__init__()
        self.branches = nn.ModuleList(
            [ConvBNReLU(in_channels, out_channels, 1)]
            + [ConvBNReLU(in_channels, out_channels, 3, dilation=r) for r in rates]
            + [ImagePooling(in_channels, out_channels)]
        )
        self.project = nn.Sequential(
            ConvBNReLU(out_channels * len(self.branches), out_channels, 1), nn.Dropout2d(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


class Decoder(nn.Module):
    """Upsample the ASPP output to the 1/4 low-level features, concatenate their 48-channel projection, refine."""

    def __init__(self, low_level_channels: int, aspp_channels: int, num_classes: int, channels: int = 256):
        super().__init__()
        self.low_level = ConvBNReLU(low_level_channels, 48, 1)
        self.refine = nn.Sequential(
            ConvBNReLU(aspp_channels + 48, channels, 3), ConvBNReLU(channels, channels, 3), nn.Dropout2d(0.1)
        )
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, aspp: torch.Tensor, low_level: torch.Tensor) -> torch.Tensor:
        aspp = resize(aspp, low_level.shape[-2:])
        return self.classifier(self.refine(torch.cat([aspp, self.low_level(low_level)], dim=1)))


class DeepLabV3Plus(SegmentationModel):
    def __init__(
        self,
        num_classes: int,
        backbone: str,
        pretrained: str | None = None,
        output_stride: int = 16,
        aux: bool = True,
        aux_weight: float = 0.4,
    ):
        super().__init__(num_classes, [aux_weight] if aux else [])
        if output_stride not in (8, 16):
            raise ConfigError(f"deeplabv3plus output_stride must be 8 or 16, got {output_stride!r}")
        self.output_stride = output_stride
        self.backbone = build_backbone(backbone, pretrained, output_stride_dilation(output_stride))
        c1, _, c3, c4 = self.backbone.channels
        # the rates keep the same receptive field in pixels: doubling the resolution doubles them
        rates = (6, 12, 18) if output_stride == 16 else (12, 24, 36)
        self.aspp = ASPP(c4, 256, rates)
        self.decoder = Decoder(c1, 256, num_classes)
        self.aux_head = SegmentationHead(c3, 256, num_classes) if aux else None

    def forward(self, x: torch.Tensor):
        size = x.shape[-2:]
        c1, _, c3, c4 = self.backbone(x)
        main = self.decoder(self.aspp(c4), c1)
        aux = [self.aux_head(c3)] if self.training and self.aux_head is not None else []
        return self.format_output(main, aux, size)


@register_model("teacher")
def deeplabv3plus_r18(
    num_classes: int, pretrained: str | None = None, output_stride: int = 16, aux: bool = True
) -> DeepLabV3Plus:
    """DeepLabV3+ on ResNet-18; `pretrained` loads the ResNet-18 only."""
    return DeepLabV3Plus(num_classes, "resnet18", pretrained, output_stride, aux)


@register_model("teacher")
def deeplabv3plus_r50(
    num_classes: int, pretrained: str | None = None, output_stride: int = 16, aux: bool = True
) -> DeepLabV3Plus:
    """DeepLabV3+ on ResNet-50; `pretrained` loads the ResNet-50 only."""
    return DeepLabV3Plus(num_classes, "resnet50", pretrained, output_stride, aux)


@register_model("teacher")
def deeplabv3plus_x50(
    num_classes: int, pretrained: str | None = None, output_stride: int = 16, aux: bool = True
) -> DeepLabV3Plus:
    """DeepLabV3+ on ResNeXt-50 (32x4d); `pretrained` loads the ResNeXt-50 only."""
    return DeepLabV3Plus(num_classes, "resnext50_32x4d", pretrained, output_stride, aux)


@register_model("teacher")
def deeplabv3plus_r101(
    num_classes: int, pretrained: str | None = None, output_stride: int = 16, aux: bool = True
) -> DeepLabV3Plus:
    """DeepLabV3+ on ResNet-101; `pretrained` loads the ResNet-101 only."""
    return DeepLabV3Plus(num_classes, "resnet101", pretrained, output_stride, aux)
