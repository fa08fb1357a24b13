"""DDP plumbing for `torchrun`: read the env it sets, pick the backend, and know who is rank 0."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from csst_edge.models.device import resolve_device as device_for


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Initialise the process group when launched by torchrun (WORLD_SIZE > 1): NCCL on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return info


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(value: float, info: DistInfo, device) -> float:
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / info.world_size


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def resolve_device(name: str, info: DistInfo) -> torch.device:
    """This rank's device: models.device.resolve_device, with plain `cuda` meaning the rank's own GPU under DDP."""
    return device_for(name, info.local_rank if info.enabled else None)


def setup_distributed(device_name: str) -> tuple[DistInfo, torch.device]:
    """Join the torchrun process group if there is one, and pick this rank's device."""
    # the backend (nccl / gloo) follows the device type; a bad --device name is reported before joining the group
    info = init_distributed(device_for(device_name).type)
    return info, resolve_device(device_name, info)
