"""Checkpoints: a plain dict, written atomically, loaded with `weights_only=True`.

Keys: model, arch, model_kwargs, num_classes, class_names, palette, mean, std, epoch, optimizer, scheduler,
scaler, config, metrics, version. Everything is tensors or plain Python types so `weights_only=True` can load
it: no pickled classes, so a checkpoint from an untrusted source cannot run code.

The format lives beside the models (as in timm), so evaluation, pseudo-labelling and export need nothing from
`csst_edge.train`; `csst_edge.train.checkpoint` re-exports it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from typing import Any

import torch

from csst_edge import __version__, storage
from csst_edge.errors import CheckpointError
from csst_edge.fileio import atomic_write_bytes
from csst_edge.models.registry import create_model  # the package's __init__ has registered every model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
REQUIRED_KEYS = ("model", "arch", "num_classes")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DistributedDataParallel, torch.compile


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Serialise to memory first, then write temp file + fsync + rename: a kill never leaves a torn file."""
    state = {**state, "version": __version__}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def clean_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The state dict with the prefixes wrappers add to every name (`module.` from DDP, `_orig_mod.` from
    torch.compile, in any order and nesting) removed, so it loads into the bare model."""
    out = {}
    for key, value in state_dict.items():
        while key.startswith(WRAPPER_PREFIXES):
            key = key.removeprefix("module.").removeprefix("_orig_mod.")
        out[key] = value
    return out


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint from a path or a URL (s3://..., read through csst_edge.storage)."""
    location = storage.as_location(path)
    if isinstance(location, str):
        try:
            data = storage.read_bytes(location)
        except storage.StorageError as e:
            raise CheckpointError(f"{e} (checkpoint)") from None
        return load_checkpoint_bytes(data, storage.redact(location), map_location)
    if not location.is_file():
        raise CheckpointError(f"{location}: checkpoint not found")
    return _checked(_torch_load(location, str(location), map_location), str(location))


def load_checkpoint_bytes(data: bytes, where: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint from its bytes (what a Ray driver ships to its actors); `where` names it in errors."""
    return _checked(_torch_load(io.BytesIO(data), where, map_location), where)


def _torch_load(source, where: str, map_location):
    try:
        return torch.load(source, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for truncated / foreign files
        raise CheckpointError(
            f"{where}: not a readable checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        ) from None


def _checked(state, where: str) -> dict[str, Any]:
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED_KEYS):
        missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
        raise CheckpointError(f"{where}: not a csst-edge checkpoint (missing keys: {', '.join(missing)})")
    return state


def model_from_checkpoint(checkpoint: str | os.PathLike | dict[str, Any], map_location: str = "cpu"):
    """Rebuild the model a checkpoint describes and load its weights. Returns (model in eval mode, checkpoint dict)."""
    state = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint, map_location)
    source = "checkpoint" if isinstance(checkpoint, dict) else storage.redact(checkpoint)
    model = create_model(state["arch"], num_classes=int(state["num_classes"]), **dict(state.get("model_kwargs") or {}))
    try:
        model.load_state_dict(clean_state_dict(state["model"]))
    except RuntimeError as e:
        raise CheckpointError(
            f"{source}: weights do not fit arch '{state['arch']}': {str(e).splitlines()[0][:300]}"
        ) from None
    model.eval()
    return model, state


def normalization(state: dict[str, Any]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean/std (RGB, 0..1 scale) the model was trained with."""
    return tuple(state.get("mean") or IMAGENET_MEAN), tuple(state.get("std") or IMAGENET_STD)
