"""ICNet (Zhao et al., 2018): image cascade network.

full image ─ 3 strided convs ─────────────────────────────────────── 1/8  ─────────┐
1/2 image  ─ ResNet stem, layer1, layer2 ───────────────────────────── 1/16 ─┐      │
              └ downsample x2 ─ layer3, layer4 (dilated) ─ PPM ─ 1x1 ── 1/32 ─ CFF ─ CFF ─ up x2 ─ classifier (1/4)

The expensive backbone only sees the 1/4-resolution branch (layer3/4, at 1/32 of the input) while the cheap
branches restore detail through cascade feature fusion (CFF). Each CFF also emits a cascade-label-guidance
logit map (from its low-resolution input) that is trained as an auxiliary output with weight 0.4, as in the paper.
Inputs need H and W divisible by 32.
"""

from __future__ import annotations

import torch
from torch import nn

from csst_edge.models.backbones import build_backbone
from csst_edge.models.base import SegmentationModel
from csst_edge.models.layers import ConvBNReLU, SummedPyramidPooling, resize
from csst_edge.models.registry import register_model


class CascadeFeatureFusion(nn.Module):
    """Upsample the low-resolution features x2, dilated 3x3 conv; 1x1 conv on the high-resolution features;
    sum + ReLU. With `num_classes`, it also has a classifier for the cascade-label-guidance logits of the
    upsampled low-resolution features (training only)."""

    def __init__(self, low_channels: int, high_channels: int, out_channels: int, num_classes: int | None):
        super().__init__()
        self.low = ConvBNReLU(low_channels, out_channels, 3, dilation=2, relu=False)
        self.high = ConvBNReLU(high_channels, out_channels, 1, relu=False)
        self.relu = nn.ReLU(inplace=True)
        # the guidance classifier; named `classifier` so that reset_classifier finds it
        self.classifier = nn.Conv2d(low_channels, num_classes, 1) if num_classes else None

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low = resize(low, high.shape[-2:])
        fused = self.relu(self.low(low) + self.high(high))
        return fused, low

    def guidance_logits(self, upsampled_low: torch.Tensor) -> torch.Tensor:
        return self.classifier(upsampled_low)


class ICNet(SegmentationModel):
    def __init__(
        self,
        num_classes: int,
        backbone: str,
        pretrained: str | None = None,
        aux: bool = True,
        aux_weights: tuple[float, float] = (0.4, 0.4),
    ):
        super().__init__(num_classes, list(aux_weights) if aux else [])
        self.aux = aux
        self.full_res_branch = nn.Sequential(
            ConvBNReLU(3, 32, 3, stride=2), ConvBNReLU(32, 32, 3, stride=2), ConvBNReLU(32, 64, 3, stride=2)
        )
        # layer3/4 keep the 1/32 resolution of the quarter branch: dilated instead of strided
        self.backbone = build_backbone(backbone, pretrained, replace_stride_with_dilation=(False, True, True))
        c2, c4 = self.backbone.channels[1], self.backbone.channels[3]
        self.pyramid_pooling = SummedPyramidPooling((1, 2, 3, 6))
        self.reduce = ConvBNReLU(c4, 256, 1)
        guidance_classes = num_classes if aux else None
        self.cff_quarter_half = CascadeFeatureFusion(256, c2, 128, guidance_classes)
        self.cff_half_full = CascadeFeatureFusion(128, 64, 128, guidance_classes)
        self.classifier = nn.Conv2d(128, num_classes, 1)

    def forward(self, x: torch.Tensor):
        size = x.shape[-2:]
        full = self.full_res_branch(x)  # 1/8
        half = resize(x, (size[0] // 2, size[1] // 2))
        half = self.backbone.layer2(self.backbone.layer1(self.backbone.stem(half)))  # 1/16
        quarter = resize(half, (half.shape[-2] // 2, half.shape[-1] // 2))
        quarter = self.backbone.layer4(self.backbone.layer3(quarter))  # 1/32
        quarter = self.reduce(self.pyramid_pooling(quarter))
        fused16, up_quarter = self.cff_quarter_half(quarter, half)
        fused8, up_fused16 = self.cff_half_full(fused16, full)
        # the paper classifies at 1/4 after a x2 upsample; a 1x1 conv commutes with bilinear upsampling, so
        # classify at 1/8 first (4x fewer pixels), then upsample: same logits, less work
        main = resize(self.classifier(fused8), (size[0] // 4, size[1] // 4))
        aux = []
        if self.training and self.aux:
            aux = [
                self.cff_half_full.guidance_logits(up_fused16),  # guidance at 1/8
                self.cff_quarter_half.guidance_logits(up_quarter),
            ]  # guidance at 1/16
        return self.format_output(main, aux, size)


@register_model("student")
def icnet_r50(num_classes: int, pretrained: str | None = None, aux: bool = True) -> ICNet:
    """ICNet with a dilated ResNet-50 (the paper's); `pretrained` loads the ResNet-50 only. H, W divisible by 32."""
    return ICNet(num_classes, "resnet50", pretrained, aux=aux)


@register_model("student")
def icnet_r18(num_classes: int, pretrained: str | None = None, aux: bool = True) -> ICNet:
    """ICNet with a dilated ResNet-18 (lighter); `pretrained` loads the ResNet-18 only. H, W divisible by 32."""
    return ICNet(num_classes, "resnet18", pretrained, aux=aux)
