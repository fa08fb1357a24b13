"""BiSeNet V1 (Yu et al., 2018) with a ResNet-18 context path.

spatial path (3 strided convs, 1/8, keeps detail) ───────────────────────────────┐
context path (ResNet-18): 1/32 ─ ARM + global context ─ up ─┐                    │
                          1/16 ─ ARM ───────────────────────┴─ up ─ 1/8 context ─┴─ FFM ─ head
Two auxiliary heads (weights 1.0, 1.0, as in the paper's joint loss) supervise the 1/8 and 1/16 context
features. About 13 M parameters for 19 classes. Inputs need H and W divisible by 32.
"""

from __future__ import annotations

import torch
from torch import nn

from csst_edge.models.backbones import build_backbone
from csst_edge.models.base import SegmentationModel
from csst_edge.models.layers import ConvBNReLU, SegmentationHead, resize
from csst_edge.models.registry import register_model


class SpatialPath(nn.Sequential):
    def __init__(self, out_channels: int = 128):
        super().__init__(
            ConvBNReLU(3, 64, 7, stride=2),
            ConvBNReLU(64, 64, 3, stride=2),
            ConvBNReLU(64, 64, 3, stride=2),
            ConvBNReLU(64, out_channels, 1),
        )


class AttentionRefinement(nn.Module):
    """3x3 conv, then reweight its channels with a sigmoid of their global average (channel attention)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = ConvBNReLU(in_channels, out_channels, 3)
        self.attention = nn.Sequential(
            nn.Conv2d(out_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return x * self.attention(x.mean(dim=(2, 3), keepdim=True))


class FeatureFusion(nn.Module):
    """Concatenate spatial and context features, 1x1 conv, then a squeeze-excite style residual reweighting."""

    def __init__(self, in_channels: int, out_channels: int, reduction: int = 4):
        super().__init__()
        self.conv = ConvBNReLU(in_channels, out_channels, 1)
        self.attention = nn.Sequential(
            nn.Conv2d(out_channels, out_channels // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels // reduction, out_channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.conv(torch.cat([spatial, context], dim=1))
        return x + x * self.attention(x.mean(dim=(2, 3), keepdim=True))


class ContextPath(nn.Module):
    """ResNet-18 features at 1/16 and 1/32, refined by ARMs, with the global average of the 1/32 features added
    as context, upsampled step by step to 1/8. Returns the 1/8 and 1/16 context features."""

    def __init__(self, pretrained: str | None = None, channels: int = 128):
        super().__init__()
        self.backbone = build_backbone("resnet18", pretrained)
        c16, c32 = self.backbone.channels[2], self.backbone.channels[3]
        self.arm16 = AttentionRefinement(c16, channels)
        self.arm32 = AttentionRefinement(c32, channels)
        self.global_context = ConvBNReLU(c32, channels, 1)
        self.refine16 = ConvBNReLU(channels, channels, 3)
        self.refine32 = ConvBNReLU(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, c8, c16, c32 = self.backbone(x)
        # the global context is 1x1: broadcasting adds it everywhere, the same as upsampling it
        context32 = self.arm32(c32) + self.global_context(c32.mean(dim=(2, 3), keepdim=True))
        context16 = self.refine32(resize(context32, c16.shape[-2:]))
        context16 = self.arm16(c16) + context16
        context8 = self.refine16(resize(context16, c8.shape[-2:]))
        return context8, context16


class BiSeNetV1(SegmentationModel):
    def __init__(self, num_classes: int, pretrained: str | None = None, aux: bool = True):
        super().__init__(num_classes, [1.0, 1.0] if aux else [])
        self.spatial_path = SpatialPath(128)
        self.context_path = ContextPath(pretrained, 128)
        self.fusion = FeatureFusion(256, 256)
        self.head = SegmentationHead(256, 256, num_classes)
        self.aux_heads = (
            nn.ModuleList(
                [
                    SegmentationHead(128, 64, num_classes),  # on the 1/8 context
                    SegmentationHead(128, 64, num_classes),
                ]
            )
            if aux
            else None
        )  # on 1/16

    def forward(self, x: torch.Tensor):
        size = x.shape[-2:]
        context8, context16 = self.context_path(x)
        fused = self.fusion(self.spatial_path(x), context8)
        aux = []
        if self.training and self.aux_heads is not None:
            aux = [self.aux_heads[0](context8), self.aux_heads[1](context16)]
        return self.format_output(self.head(fused), aux, size)


@register_model("student")
def bisenet_r18(num_classes: int, pretrained: str | None = None, aux: bool = True) -> BiSeNetV1:
    """BiSeNet V1, ResNet-18 context path (~13 M parameters); `pretrained` loads the ResNet-18 only."""
    return BiSeNetV1(num_classes, pretrained, aux=aux)
