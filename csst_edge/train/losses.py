"""Segmentation losses: cross-entropy with an ignore index, OHEM, auxiliary heads, soft (top-k) pseudo labels and
the model regularizer of the paper's Eq. 7."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from csst_edge.errors import ConfigError


class OhemCrossEntropy(nn.Module):
    """Online hard example mining: average the loss over the pixels whose probability for the true class is below
    `thresh`, but over at least `min_kept` pixels (the hardest ones) so easy batches still give a gradient."""

    def __init__(self, ignore_index: int = 255, thresh: float = 0.7, min_kept: int = 100_000):
        super().__init__()
        self.ignore_index, self.thresh, self.min_kept = ignore_index, float(thresh), int(min_kept)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pixel_loss = F.cross_entropy(logits, target, ignore_index=self.ignore_index, reduction="none").flatten()
        valid = target.flatten() != self.ignore_index
        n_valid = int(valid.sum())
        if n_valid == 0:
            return logits.sum() * 0.0
        # p(true class) = exp(-CE); choosing by loss is the same order without a second softmax
        loss_valid = pixel_loss[valid]
        loss_thresh = -torch.log(torch.tensor(self.thresh, device=logits.device, dtype=loss_valid.dtype))
        k = min(self.min_kept, n_valid)
        if k > 0:
            kth_hardest = torch.topk(loss_valid.detach(), k, sorted=True).values[-1]
            loss_thresh = torch.minimum(loss_thresh, kth_hardest)
        kept = loss_valid[loss_valid.detach() >= loss_thresh]
        return kept.mean()


def build_criterion(name: str, ignore_index: int = 255, thresh: float = 0.7, min_kept: int = 100_000) -> nn.Module:
    if name == "ce":
        return nn.CrossEntropyLoss(ignore_index=ignore_index)
    if name == "ohem":
        return OhemCrossEntropy(ignore_index, thresh, min_kept)
    raise ConfigError(f"config key 'loss.name' is '{name}': expected 'ce' or 'ohem'")


def _to_size(logits: torch.Tensor, size) -> torch.Tensor:
    return (
        logits
        if logits.shape[-2:] == tuple(size)
        else F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    )


class SegLoss(nn.Module):
    """Main loss plus weighted auxiliary losses. `outputs` is logits or (main, [aux, ...]) as models return in
    training mode; logits of another resolution are resized to the target's."""

    def __init__(self, criterion: nn.Module, aux_weights=()):
        super().__init__()
        self.criterion, self.aux_weights = criterion, list(aux_weights)

    def forward(self, outputs, target: torch.Tensor):
        main, aux = (outputs[0], list(outputs[1])) if isinstance(outputs, (tuple, list)) else (outputs, [])
        size = target.shape[-2:]
        loss = self.criterion(_to_size(main, size), target)
        parts = {"main": loss.detach()}
        for i, (w, logits) in enumerate(zip(self.aux_weights, aux, strict=False)):
            aux_loss = self.criterion(_to_size(logits, size), target)
            loss = loss + w * aux_loss
            parts[f"aux{i}"] = aux_loss.detach()
        return loss, parts


class SoftCrossEntropy(nn.Module):
    """Cross-entropy against a stored top-k distribution: -sum_k p_k log softmax(logits)[id_k].

    `ids`, `probs`: N x K x H x W. Pixels whose probabilities sum to 0 (padding, ignore) carry no loss; the mean is
    over pixels with mass. The top-k mass is renormalised to 1, so the loss is a proper cross-entropy."""

    def forward(self, logits: torch.Tensor, ids: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(_to_size(logits, ids.shape[-2:]).float(), dim=1)
        picked = torch.gather(log_p, 1, ids.long())
        mass = probs.sum(1, keepdim=True)
        weights = probs / mass.clamp_min(1e-6)
        pixel_loss = -(weights * picked).sum(1)
        valid = mass.squeeze(1) > 0
        if not bool(valid.any()):
            return logits.sum() * 0.0
        return pixel_loss[valid].mean()


def model_regularizer(logits: torch.Tensor, weight: float) -> torch.Tensor:
    """Eq. 7 of the paper: weight * mean over pixels of -(1/C) sum_c log p_c. It pushes the prediction away from
    over-confident one-hot outputs (a label-smoothing-like term that needs no label)."""
    log_p = F.log_softmax(logits.float(), dim=1)
    return weight * (-log_p.mean(1)).mean()
