"""Fast-SCNN (Poudel et al., 2019): a two-branch real-time network that shares its first layers.

learning to downsample (1/8, 64 ch) ──────────────────────────────┐
        └─► global feature extractor (bottlenecks to 1/32) ─► PPM ─┴─► feature fusion ─► classifier

About 1.1 M parameters for 19 classes. Inputs need H and W divisible by 32.
"""

from __future__ import annotations

import torch
from torch import nn

from csst_edge.errors import ConfigError
from csst_edge.models.base import SegmentationModel
from csst_edge.models.layers import (
    ConvBNReLU,
    DepthwiseSeparableConv,
    InvertedResidual,
    PyramidPooling,
    SegmentationHead,
    resize,
)
from csst_edge.models.registry import register_model


class LearningToDownsample(nn.Sequential):
    def __init__(self, channels: tuple[int, int, int] = (32, 48, 64)):
        super().__init__(
            ConvBNReLU(3, channels[0], 3, stride=2),
            DepthwiseSeparableConv(channels[0], channels[1], stride=2),
            DepthwiseSeparableConv(channels[1], channels[2], stride=2),
        )


class GlobalFeatureExtractor(nn.Sequential):
    """Three groups of three inverted residuals (strides 2, 2, 1) then pyramid pooling, from 1/8 to 1/32."""

    def __init__(
        self,
        in_channels: int = 64,
        stage_channels: tuple[int, ...] = (64, 96, 128),
        stage_strides: tuple[int, ...] = (2, 2, 1),
        blocks_per_stage: int = 3,
        out_channels: int = 128,
    ):
        blocks: list[nn.Module] = []
        channels = in_channels
        for out, stride in zip(stage_channels, stage_strides, strict=True):
            for i in range(blocks_per_stage):
                blocks.append(InvertedResidual(channels, out, stride if i == 0 else 1, expansion=6))
                channels = out
        super().__init__(*blocks, PyramidPooling(channels, out_channels))


class FeatureFusion(nn.Module):
    """Add the upsampled global features (depthwise conv, then 1x1) to the 1/8 detail features (1x1)."""

    def __init__(self, high_res_channels: int, low_res_channels: int, out_channels: int):
        super().__init__()
        self.low_res = nn.Sequential(
            ConvBNReLU(low_res_channels, out_channels, 3, groups=out_channels),
            ConvBNReLU(out_channels, out_channels, 1, relu=False),
        )
        self.high_res = ConvBNReLU(high_res_channels, out_channels, 1, relu=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, high_res: torch.Tensor, low_res: torch.Tensor) -> torch.Tensor:
        low_res = self.low_res(resize(low_res, high_res.shape[-2:]))
        return self.relu(self.high_res(high_res) + low_res)


class Classifier(nn.Sequential):
    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.1):
        super().__init__()
        self.dsconv1 = DepthwiseSeparableConv(in_channels, in_channels)
        self.dsconv2 = DepthwiseSeparableConv(in_channels, in_channels)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(in_channels, num_classes, 1)


class FastSCNN(SegmentationModel):
    """Fast-SCNN. With `aux=True` (default) an auxiliary head on the 1/8 learning-to-downsample features gives
    one extra output (weight 0.4): the shared shallow layers get a direct gradient, which helps training from
    scratch. It is skipped in eval mode, so inference cost and exported graphs are unaffected."""

    def __init__(self, num_classes: int, aux: bool = True, aux_weight: float = 0.4):
        super().__init__(num_classes, [aux_weight] if aux else [])
        self.learning_to_downsample = LearningToDownsample((32, 48, 64))
        self.global_features = GlobalFeatureExtractor(64, (64, 96, 128), (2, 2, 1), 3, 128)
        self.fusion = FeatureFusion(64, 128, 128)
        self.head = Classifier(128, num_classes)
        self.aux_head = SegmentationHead(64, 32, num_classes) if aux else None

    def forward(self, x: torch.Tensor):
        size = x.shape[-2:]
        detail = self.learning_to_downsample(x)
        fused = self.fusion(detail, self.global_features(detail))
        aux = [self.aux_head(detail)] if self.training and self.aux_head is not None else []
        return self.format_output(self.head(fused), aux, size)


@register_model("student")
def fastscnn(num_classes: int, pretrained: str | None = None, aux: bool = True) -> FastSCNN:
    """Fast-SCNN (~1.1 M parameters); always trained from scratch (it has no ImageNet backbone)."""
    if pretrained is not None:
        raise ConfigError(
            f"fastscnn has no pretrained backbone, so pretrained='{pretrained}' cannot be used; "
            "train it from scratch or start from a checkpoint"
        )
    return FastSCNN(num_classes, aux=aux)
