"""One training epoch: gradient accumulation, global loss sums and throughput, without per-batch syncs.

What one micro-batch does (forward, loss, backward) is the task's `train_step` (dlforge.tasks)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from dlforge.train import dist
from dlforge.train.trainer import steps_optimizer

if TYPE_CHECKING:
    from dlforge.train.progress import EpochProgress
    from dlforge.train.trainer import LoopState, Trainer

def train_epoch(tr: Trainer, state: LoopState, bar: EpochProgress,
                checkpoint: Callable[[Tensor], None] | None = None) -> dict[str, float]:
    """One pass over this worker's shard; the loss and throughput returned are global (summed over ranks).

    Continues an unfinished epoch when `state.batch` > 0 (restored from a mid-epoch checkpoint, with the
    loader's position, the RNG and `tr.partial` sums). `checkpoint(sums)` is called every
    `train.checkpoint_every_steps` optimizer steps inside the epoch."""
    epoch, done = state.epoch + 1, state.batch
    if not done:
        torch.manual_seed(tr.cfg.seed * 1_000_003 + epoch * 1009 + tr.ctx.rank)  # augmentation, dropout
    tr.train_batches.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
    tr.model.train()
    if tr.freezer is not None:
        tr.freezer.hold_batchnorm(epoch)
    bar.start(epoch, len(tr.train_batches))
    bar.advance(done)
    names = tr.task.losses
    total = torch.zeros(len(names) + 1, device=tr.ctx.device)  # (loss sums…, samples): no per-batch sync
    if done and tr.partial is not None:
        total += tr.partial.to(tr.ctx.device)
    every = tr.cfg.train.checkpoint_every_steps
    started, last = time.perf_counter(), len(tr.train_batches)
    for i, batch in enumerate(tr.train_batches, start=done + 1):
        batch = to_device(batch, tr.ctx.device)
        step = steps_optimizer(i, last, tr.cfg.train.accumulate)
        losses, rows = tr.task.train_step(tr, batch, step), batch_rows(batch)
        total[:-1] += torch.stack([losses[name].float() for name in names]) * rows
        total[-1] += rows
        state.step += int(step)
        if step and tr.tracking.due(state.step):  # reads this batch's losses back: a sync, every N steps only
            lr = max(g["lr"] for g in tr.optimizer.param_groups)
            tr.tracking.step(state.step, epoch, {f"train_{n}": losses[n] for n in names}, lr)
        bar.advance()
        if step and every and checkpoint is not None and state.step % every == 0 and i < last:
            state.batch = i
            checkpoint(total)
    state.batch = 0
    elapsed = time.perf_counter() - started
    *sums, seen = dist.all_sum(total, tr.ctx).tolist()
    means = {f"train_{name}": value / max(seen, 1) for name, value in zip(names, sums, strict=True)}
    return {**means, "samples_per_s": seen / elapsed, "time_s": elapsed}


def to_device(batch: Any, device: torch.device) -> Any:
    """Tensors of a batch (a tensor, or tuples/lists/dicts of them) moved to `device`."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def batch_rows(batch: Any) -> int:
    """Samples in a batch: the length of its first tensor."""
    if isinstance(batch, Tensor):
        return len(batch)
    first = next(iter(batch.values())) if isinstance(batch, dict) else batch[0]
    return batch_rows(first)
