"""One training epoch and one optimiser step: mixed precision, gradient accumulation, DDP no_sync."""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
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


def train_step(tr: Trainer, x: Tensor, y: Tensor, optimizer_step: bool) -> Tensor:
    """Forward/backward on one micro-batch; steps the optimiser every `accumulate` micro-batches.

    Micro-batches that do not step skip DDP's gradient all-reduce (no_sync): gradients accumulate
    locally and are reduced once, on the stepping micro-batch.
    """
    t = tr.cfg.train
    with dist.no_sync(tr.model, tr.ctx, skip=not optimizer_step):
        with autocast(t.precision, tr.ctx.device):
            loss = F.cross_entropy(tr.model(x), y, label_smoothing=t.label_smoothing)
        scaled = loss / t.accumulate
        (tr.scaler.scale(scaled) if tr.scaler else scaled).backward()
    if optimizer_step:
        optimizer_update(tr)
    return loss.detach()


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
    total = torch.zeros(2, device=tr.ctx.device)  # (loss sum, samples): stays on device, no per-batch sync
    started, last = time.perf_counter(), len(tr.train_batches)
    for i, (x, y) in enumerate(tr.train_batches, start=1):
        x, y = x.to(tr.ctx.device, non_blocking=True), y.to(tr.ctx.device, non_blocking=True)
        if tr.augmenter is not None:
            x, y = tr.augmenter(x, y)
        step = i % tr.cfg.train.accumulate == 0 or i == last
        total[0] += train_step(tr, x, y, step).float() * len(x)
        total[1] += len(x)
        state.step += int(step)
        bar.advance()
    elapsed = time.perf_counter() - started
    loss_sum, seen = dist.all_sum(total, tr.ctx).tolist()
    return {"train_loss": loss_sum / max(seen, 1), "samples_per_s": seen / elapsed, "time_s": elapsed}
