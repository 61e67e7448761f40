"""DataLoaders for one worker of a (possibly distributed) run.

The global batch is split evenly across workers; the train sampler is reseeded every epoch so
every run, resumed or not, sees the same order. Evaluation shards without padding so no sample
is counted twice.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from dlforge.config import ConfigError


def per_worker_batch(global_batch: int, world_size: int) -> int:
    if global_batch % world_size:
        fix = global_batch - global_batch % world_size or world_size
        raise ConfigError([f"train.batch_size: the global batch {global_batch} must divide evenly across "
                           f"{world_size} workers — e.g. --set train.batch_size={fix}"])
    return global_batch // world_size


def train_loader(ds: Dataset, global_batch: int, rank: int, world_size: int, seed: int,
                 num_workers: int = 0) -> DataLoader:
    """Call `loader.sampler.set_epoch(epoch)` before each epoch."""
    sampler: DistributedSampler[Any] = DistributedSampler(ds, num_replicas=world_size, rank=rank, shuffle=True,
                                                          seed=seed)
    return DataLoader(ds, batch_size=per_worker_batch(global_batch, world_size), sampler=sampler,
                      num_workers=num_workers, drop_last=False, pin_memory=torch.cuda.is_available())


def eval_loader(ds: Dataset, batch_size: int, rank: int = 0, world_size: int = 1) -> DataLoader:
    """This worker's shard (rank, rank + world, …), unpadded and in order.

    Every worker gets the same number of batches (sizes differ by at most one sample), since an
    FSDP forward is a collective that all ranks must join.
    """
    shard = torch.arange(rank, len(ds), world_size)  # type: ignore[arg-type]
    count = max(1, math.ceil(math.ceil(len(ds) / world_size) / batch_size))  # type: ignore[arg-type]
    batches = [b.tolist() for b in torch.tensor_split(shard, count) if len(b)]
    return DataLoader(ds, batch_sampler=batches)
