"""Start a model from a checkpoint trained on another domain, which may have another class set (few-shot
transfer, `method=fewshot`; the k-shot sweep is `csst_edge.pipeline.fewshot`).

When the target has another class count (19 Cityscapes classes -> 66 Mapillary ones) every tensor whose shape
depends on the class count (main and auxiliary classifiers) keeps its fresh initialisation; everything else
starts from the checkpoint.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from csst_edge.errors import CheckpointError
from csst_edge.models.checkpoint import clean_state_dict, load_checkpoint


def load_for_finetune(
    model: nn.Module,
    checkpoint: str | os.PathLike | dict[str, Any],
    arch: str | None = None,
    min_match: float = 0.5,
    source: str | None = None,
) -> list[str]:
    """Load every checkpoint tensor whose name and shape match `model`; return the model keys left fresh.

    A shape mismatch is accepted only where the checkpoint's size is its class count (the classifier layers of
    the main and auxiliary heads): those tensors keep the model's fresh initialisation. Any other mismatch, an
    `arch` other than the checkpoint's, or fewer than `min_match` of the model's tensors loaded means the
    checkpoint is for another network, which is a CheckpointError naming the file.
    """
    if isinstance(checkpoint, dict):
        state, where = checkpoint, source or "checkpoint"
    else:
        state, where = load_checkpoint(checkpoint), source or str(checkpoint)
    if arch is not None and state.get("arch") != arch:
        raise CheckpointError(
            f"{where}: checkpoint is arch '{state.get('arch')}', the model is '{arch}' "
            f"(few-shot finetuning keeps the architecture; use model={state.get('arch')})"
        )
    src_classes = int(state["num_classes"])
    weights = clean_state_dict(state["model"])
    own = model.state_dict()
    merged, replaced, other, target_classes = dict(own), [], [], set()
    for key, tensor in own.items():
        theirs = weights.get(key)
        if theirs is None:
            replaced.append(key)  # e.g. an aux head the checkpoint was trained without
        elif theirs.shape == tensor.shape:
            merged[key] = theirs.to(dtype=tensor.dtype)
        elif theirs.dim() == tensor.dim() and all(
            a == b or a == src_classes for a, b in zip(theirs.shape, tensor.shape, strict=True)
        ):
            replaced.append(key)
            target_classes.update(b for a, b in zip(theirs.shape, tensor.shape, strict=True) if a != b)
        else:
            other.append(f"{key} {tuple(theirs.shape)} vs {tuple(tensor.shape)}")
    if other or len(target_classes) > 1:
        detail = other[0] if other else f"class dimensions {sorted(target_classes)}"
        raise CheckpointError(
            f"{where}: weights do not fit the model beyond the classifier "
            f"({len(other)} mismatched tensor(s), e.g. {detail}): "
            "another architecture or model_kwargs"
        )
    loaded = len(own) - len(replaced)
    if not own or loaded < min_match * len(own):
        raise CheckpointError(
            f"{where}: only {loaded} of the model's {len(own)} tensors are in the checkpoint "
            f"(arch '{state.get('arch')}'): it is for another network"
        )
    model.load_state_dict(merged)
    return sorted(replaced)
