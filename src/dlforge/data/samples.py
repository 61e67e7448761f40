"""Datasets that read a sample only when a loader asks for it, and what is computed from them in one pass.

A file dataset keeps a compact list of its files (a numpy byte-string array, not a Python list: forked
DataLoader workers would otherwise copy every page it touches) and decodes in `__getitem__`, which runs
in the loader's worker processes. Any randomness a sample needs comes from (seed, index), never from a
worker's RNG, so a sample is the same whichever worker reads it and whenever: a resumed run sees the
data an uninterrupted one saw.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from dlforge.cores import usable_cores
from dlforge.data.errors import DataError, SampleError

log = logging.getLogger(__name__)

STATS_SAMPLES = 2000  # normalisation statistics come from at most this many train samples (seeded)
MAX_AUTO_WORKERS = 8


# The epoch whose random draws a training sample takes (random crops differ every epoch, and equally so in
# a resumed run); unset (None) for evaluation, which decodes deterministically. Set by `EpochDraws`.
DRAW: contextvars.ContextVar[int | None] = contextvars.ContextVar("dlforge_draw", default=None)


class EpochDraws(Dataset[Any]):
    """The train split as its loader reads it: key (epoch, i) → sample i, decoded with that epoch's draws.

    The loader's sampler yields the keys (dlforge.data.loaders.EpochSampler): the epoch has to travel with
    the index, because persistent worker processes never see the main process set it."""

    def __init__(self, ds: Dataset[Any]) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        token = DRAW.set(epoch)
        try:
            return self.ds[index]
        finally:
            DRAW.reset(token)

    def __getitems__(self, keys: list[tuple[int, int]]) -> list[Any]:
        """A batch at once (its keys share one epoch), for a dataset that reads batches (tokenized texts)."""
        token = DRAW.set(keys[0][0])
        try:
            batch = getattr(self.ds, "__getitems__", None)
            indices = [index for _, index in keys]
            return batch(indices) if batch is not None else [self.ds[i] for i in indices]  # type: ignore[no-any-return]
        finally:
            DRAW.reset(token)


class LazySamples(Dataset[tuple[Tensor, int]]):
    """Samples with a class index each, decoded one at a time by `load(at, index, draw)` (a file, a tar
    member); `draw`: the training epoch, for random transforms, or None when evaluating.

    `skip_unreadable`: a sample whose decoding raises one of `errors` is replaced by the next readable one
    (a warning names it), as timm and torchvision users expect of a folder with a few broken files;
    otherwise it is an error. `index` is the sample asked for, so a replacement draws that sample's RNG.
    """

    def __init__(self, targets: Sequence[int] | np.ndarray, errors: tuple[type[Exception], ...],
                 skip_unreadable: bool) -> None:
        self.targets = np.asarray(targets, dtype=np.int64)
        self.errors, self.skip_unreadable = errors, skip_unreadable

    def load(self, at: int, index: int, draw: int | None) -> np.ndarray:
        raise NotImplementedError

    def describe(self, at: int) -> str:
        """Where sample `at` comes from, for messages."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        for attempt in range(min(len(self), 100)):
            at = (index + attempt) % len(self)
            try:
                return torch.from_numpy(self.load(at, index, DRAW.get())), int(self.targets[at])
            except self.errors as exc:
                if not self.skip_unreadable:
                    raise SampleError(f"{exc} — fix or remove it, or set data.params.skip_unreadable: true") from None
                log.warning("skipped unreadable file %s (using the next one in its place)", exc)
        raise SampleError(f"data.params.path: 100 files in a row from {self.describe(index)} cannot be read")


class FileSamples(LazySamples):
    """Files (paths relative to `root`) with a class index each; `decode(path, index, draw)` reads one."""

    def __init__(self, root: Path, files: Sequence[str], targets: Sequence[int],
                 decode: Callable[[Path, int, int | None], np.ndarray], errors: tuple[type[Exception], ...],
                 skip_unreadable: bool) -> None:
        super().__init__(targets, errors, skip_unreadable)
        self.root = root
        self.files = np.array([f.encode() for f in files], dtype=np.bytes_)
        self.decode = decode

    def path(self, index: int) -> Path:
        return self.root / self.files[index].decode()

    def load(self, at: int, index: int, draw: int | None) -> np.ndarray:
        return self.decode(self.path(at), index, draw)

    def describe(self, at: int) -> str:
        return str(self.path(at))


def subset(ds: Dataset[Any], indices: Tensor) -> Dataset[Any]:
    """The samples at `indices`: sliced tensors for an in-memory dataset, a lazy view otherwise."""
    if isinstance(ds, TensorDataset):
        return TensorDataset(*(t[indices] for t in ds.tensors))
    return Subset(ds, indices.tolist())


def in_memory(ds: Dataset[Any]) -> bool:
    """Whether every sample is already a tensor in this process (reading costs nothing: no workers needed)."""
    return isinstance(ds, TensorDataset)


def resolve_workers(setting: int | str, ds: Dataset[Any], world_size: int = 1) -> int:
    """data.workers: a number, or "auto": none for data already in memory, else this process's share of
    the usable cores (at most 8)."""
    if setting != "auto":
        return int(setting)
    if in_memory(ds):
        return 0
    return max(1, min(MAX_AUTO_WORKERS, usable_cores() // max(world_size, 1)))


def take(ds: Dataset[Any], limit: int | None = None, workers: int = 0) -> tuple[Tensor, Tensor]:
    """The first `limit` samples (all when None) stacked as (inputs, targets): for the few that a parity
    check, a preview or a calibration needs — never a whole large split."""
    n = len(ds) if limit is None else min(limit, len(ds))  # type: ignore[arg-type]
    if isinstance(ds, TensorDataset):
        x, y = ds.tensors[0][:n], ds.tensors[1][:n]
        return x, y
    loader = DataLoader(Subset(ds, range(n)), batch_size=256, num_workers=workers)
    xs, ys = zip(*loader, strict=True) if n else ((), ())
    if not xs:
        raise DataError("data: the split is empty")
    return torch.cat(xs), torch.cat(ys)


def streaming_stats(ds: Dataset[Any], indices: Tensor, seed: int, workers: int,
                    limit: int = STATS_SAMPLES) -> tuple[list[float], list[float], int]:
    """Per-channel mean/std over (a seeded sample of at most `limit` of) `indices`, in one pass of float64
    sums: the dataset is never held. Returns (mean, std, samples used)."""
    if len(indices) > limit:
        pick = torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed))[:limit]
        indices = indices[pick.sort().values]
    loader = DataLoader(Subset(ds, indices.tolist()), batch_size=128, num_workers=workers)
    total = squares = None
    count = 0
    for x, _ in loader:
        x = x.double()
        dims = [0, *range(2, x.dim())] if x.dim() >= 3 else [0]
        s, q = x.sum(dim=dims), (x * x).sum(dim=dims)
        total, squares = (s, q) if total is None else (total + s, squares + q)  # type: ignore[operator]
        count += x.numel() // s.numel()
    assert total is not None and squares is not None
    mean = total / count
    var = ((squares - count * mean * mean) / max(count - 1, 1)).clamp_min(0)
    std = var.sqrt().clamp_min(1e-6)
    return mean.flatten().tolist(), std.flatten().tolist(), len(indices)


def sample_rng(seed: int, index: int, draw: int = 0) -> np.random.Generator:
    """The RNG of one sample (crop offsets, …) in one epoch (`draw`): the same whichever worker reads it,
    run after run."""
    return np.random.default_rng([seed, index, draw])
