"""DataLoaders for one worker of a (possibly distributed) run.

The global batch is split evenly across workers; each rank reads a disjoint part of the train split,
reshuffled every epoch from the run seed, so every run, resumed or not, sees the same order. The train
loader is torchdata's StatefulDataLoader: its position in the epoch is part of a mid-epoch checkpoint.
Evaluation shards without padding so no sample is counted twice.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchdata.stateful_dataloader import StatefulDataLoader

from dlforge.config import ConfigError
from dlforge.data.samples import EpochDraws
from dlforge.memory import release_free_memory

PREFETCH = 4  # batches each worker keeps ready


def per_worker_batch(global_batch: int, world_size: int) -> int:
    if global_batch % world_size:
        fix = global_batch - global_batch % world_size or world_size
        raise ConfigError([f"train.batch_size: the global batch {global_batch} must divide evenly across "
                           f"{world_size} workers — e.g. --set train.batch_size={fix}"])
    return global_batch // world_size


def _parallel(workers: int) -> dict[str, Any]:
    """Worker settings: prefetching; pinned memory feeds a GPU asynchronously. Workers are started for each
    pass (a fork takes milliseconds), not kept: kept train workers would sit beside the evaluation
    loader's during validation, and every forked worker counts the parent's memory in its RSS again."""
    options: dict[str, Any] = {"num_workers": workers, "pin_memory": torch.cuda.is_available()}
    if workers:
        options.update(prefetch_factor=PREFETCH)
    return options


class _Trimming:
    """A loader whose worker processes fork from a trimmed parent (release_free_memory)."""

    num_workers: int

    def __iter__(self) -> Any:
        if self.num_workers:
            release_free_memory()
        return super().__iter__()  # type: ignore[misc]


class TrainLoader(_Trimming, StatefulDataLoader):
    """torchdata's StatefulDataLoader (its position goes into mid-epoch checkpoints), workers forked trimmed."""


class EvalLoader(_Trimming, DataLoader[Any]):
    """A torch DataLoader whose workers fork from a trimmed parent."""


class EpochSampler(DistributedSampler[Any]):
    """This rank's part of an epoch's shuffle, each index paired with the epoch: (epoch, i) keys for
    `EpochDraws`, so samples take that epoch's random draws in whichever worker reads them."""

    def __iter__(self) -> Iterator[Any]:
        return ((self.epoch, i) for i in super().__iter__())


def train_loader(ds: Dataset[Any], global_batch: int, rank: int, world_size: int, seed: int,
                 workers: int = 0) -> TrainLoader:
    """Call `loader.sampler.set_epoch(epoch)` before each epoch."""
    ds = EpochDraws(ds)
    sampler = EpochSampler(ds, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
    # its own generator: starting an epoch's iterator must not draw from the global RNG that augmentation
    # and dropout use, or an epoch resumed mid-way would see other random numbers than the original run
    generator = torch.Generator().manual_seed(seed)
    with warnings.catch_warnings():  # torchdata 0.11 calls torch.set_vital, deprecated in torch 2.13
        warnings.filterwarnings("ignore", message="'set_vital' is deprecated", category=UserWarning)
        return TrainLoader(ds, batch_size=per_worker_batch(global_batch, world_size), sampler=sampler,
                           drop_last=False, generator=generator, **_parallel(workers))


def eval_loader(ds: Dataset[Any], batch_size: int, rank: int = 0, world_size: int = 1,
                workers: int = 0) -> DataLoader[Any]:
    """This worker's shard (rank, rank + world, …), unpadded and in order.

    Every worker gets the same number of batches (sizes differ by at most one sample), since an
    FSDP forward is a collective that all ranks must join.
    """
    shard = torch.arange(rank, len(ds), world_size)  # type: ignore[arg-type]
    count = max(1, math.ceil(math.ceil(len(ds) / world_size) / batch_size))  # type: ignore[arg-type]
    batches = [b.tolist() for b in torch.tensor_split(shard, count) if len(b)]
    return EvalLoader(ds, batch_sampler=batches, generator=torch.Generator(), **_parallel(workers))
