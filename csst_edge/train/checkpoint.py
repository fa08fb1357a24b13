"""Re-export: the checkpoint format (save, load, rebuild the model) lives in `csst_edge.models.checkpoint`."""

from csst_edge.models.checkpoint import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    REQUIRED_KEYS,
    clean_state_dict,
    load_checkpoint,
    model_from_checkpoint,
    normalization,
    save_checkpoint,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "REQUIRED_KEYS",
    "clean_state_dict",
    "load_checkpoint",
    "model_from_checkpoint",
    "normalization",
    "save_checkpoint",
]
