"""One way to turn a `--device` / `device=` value into a torch.device, for every command and library call."""

from __future__ import annotations

import torch

from csst_edge.errors import ConfigError


def resolve_device(name: str = "auto", local_rank: int | None = None) -> torch.device:
    """auto (CUDA when there is one, else CPU), cpu, cuda, cuda:1 ... → a torch.device. Under DDP (`local_rank`),
    plain `cuda` means this rank's GPU. A bad name, or CUDA asked for where PyTorch sees none, is a ConfigError."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device: '{name}' is not a device (auto, cpu, cuda, cuda:1 ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA GPU is visible to PyTorch here")
    if device.type == "cuda" and device.index is None and local_rank is not None:
        return torch.device("cuda", local_rank)
    return device
