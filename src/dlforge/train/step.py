"""One training epoch and the shared optimiser update: mixed precision, gradient accumulation, DDP no_sync.

What one micro-batch does (forward, loss, backward) is the task's `train_step` (dlforge.tasks)."""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from dlforge.train import dist

if TYPE_CHECKING:
    from dlforge.train.loop import LoopState, Trainer
    from dlforge.train.progress import EpochProgress

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision for the forward pass (and the loss): bf16 or fp16, on CPU and GPU alike."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """fp16 gradients underflow without loss scaling (on any device); bf16 has fp32's range and needs none."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


def optimizer_update(tr: Trainer) -> None:
    if tr.scaler:
        tr.scaler.unscale_(tr.optimizer)  # clip the true gradients, not the scaled ones
    if tr.cfg.train.grad_clip:
        nn.utils.clip_grad_norm_(tr.net.parameters(), tr.cfg.train.grad_clip)
    if tr.scaler:
        tr.scaler.step(tr.optimizer)  # skipped when the gradients overflowed
        tr.scaler.update()
    else:
        tr.optimizer.step()
    tr.optimizer.zero_grad(set_to_none=True)
    tr.scheduler.step()


def train_epoch(tr: Trainer, state: LoopState, bar: EpochProgress) -> dict[str, float]:
    """One pass over this worker's shard; the loss and throughput returned are global (summed over ranks)."""
    epoch = state.epoch + 1
    torch.manual_seed(tr.cfg.seed * 1_000_003 + epoch * 1009 + tr.ctx.rank)  # augmentation, dropout
    tr.train_batches.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
    tr.model.train()
    if tr.freezer is not None:
        tr.freezer.hold_batchnorm(epoch)
    bar.start(epoch, len(tr.train_batches))
    names = tr.task.losses
    total = torch.zeros(len(names) + 1, device=tr.ctx.device)  # (loss sums…, samples): no per-batch sync
    started, last = time.perf_counter(), len(tr.train_batches)
    for i, batch in enumerate(tr.train_batches, start=1):
        batch = to_device(batch, tr.ctx.device)
        step = i % tr.cfg.train.accumulate == 0 or i == last
        losses, rows = tr.task.train_step(tr, batch, step), batch_rows(batch)
        total[:-1] += torch.stack([losses[name].float() for name in names]) * rows
        total[-1] += rows
        state.step += int(step)
        bar.advance()
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
