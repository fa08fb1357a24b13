"""The output contract every segmentation model follows.

eval mode:  forward(x) -> logits N x num_classes x H x W at the input resolution
train mode: forward(x) -> (main_logits, [aux_logits, ...]), all at the input resolution,
            with `model.aux_weights` giving one loss weight per aux output (possibly none).

Aux heads are skipped in eval mode, so they cost nothing at inference and never reach an exported graph.
"""

from __future__ import annotations

import torch
from torch import nn

from csst_edge.models.layers import resize


class SegmentationModel(nn.Module):
    """Base class: holds `num_classes` / `aux_weights` and turns head outputs into the contract above."""

    def __init__(self, num_classes: int, aux_weights: list[float]):
        super().__init__()
        self.num_classes = num_classes
        self.aux_weights = list(aux_weights)

    def format_output(self, main: torch.Tensor, aux: list[torch.Tensor], size) -> torch.Tensor | tuple:
        """Upsample head outputs to `size` (the input's H, W); return aux only while training."""
        main = resize(main, size)
        if not self.training:
            return main
        return main, [resize(a, size) for a in aux]

    def reset_classifier(self, num_classes: int) -> None:
        """Replace every final 1x1 classifier conv (main and aux) with a freshly initialised one for
        `num_classes` classes, keeping everything else: few-shot finetuning on a domain with another class set."""
        for module in list(self.modules()):
            for child_name, child in list(module.named_children()):
                if child_name == "classifier" and isinstance(child, nn.Conv2d):
                    new = nn.Conv2d(child.in_channels, num_classes, 1, bias=child.bias is not None)
                    setattr(module, child_name, new.to(child.weight.device, child.weight.dtype))
        self.num_classes = num_classes
