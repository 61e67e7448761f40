"""Everything torch.distributed, in one place: torchrun's environment, process group, DDP, collectives.

Nothing else in dlforge imports torch.distributed. A single process (no torchrun) is world size 1
and every helper here degrades to a no-op, so the same training code runs everywhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(preference: str, local_rank: int = 0) -> torch.device:
    """`auto` → this worker's GPU when CUDA is present, else the CPU."""
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("train.device: 'cuda' was asked for but no CUDA device is visible")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def setup(device_preference: str = "auto") -> DistContext:
    """Read torchrun's env (RANK, WORLD_SIZE, LOCAL_RANK) and join the group: nccl on GPU, gloo on CPU."""
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = pick_device(device_preference, local_rank)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank, local_rank, world, device)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, ctx: DistContext, sync_batchnorm: bool = False) -> nn.Module:
    """DDP when distributed (one device per process), the model itself otherwise."""
    if not ctx.distributed:
        return model
    if sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside DDP / torch.compile wrappers (for saving and export)."""
    inner = getattr(model, "module", model)
    return getattr(inner, "_orig_mod", inner)


def all_agree(flag: bool, ctx: DistContext) -> bool:
    """True only if every rank says True (so all ranks stop early together)."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([0 if flag else 1], device=ctx.device)
    dist.all_reduce(t)
    return int(t.item()) == 0


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()
