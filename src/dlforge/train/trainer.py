"""What a training step works with: the trainer (model, optimizer, data, task), the loop's counters, and
the one rule for when gradient accumulation steps the optimizer.

Below both the loop (which builds and drives a trainer) and the epoch (dlforge.train.step, which runs
one), so neither imports the other; tasks see it as dlforge.taskapi.StepContext.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader

from dlforge.config import ExperimentConfig
from dlforge.config.schema import OptimizerConfig
from dlforge.runinfo import RunInfo
from dlforge.taskapi import Task
from dlforge.train import dist
from dlforge.train.dist import DistContext
from dlforge.train.optim import build_optimizer, build_scheduler
from dlforge.train.param_groups import Freezer, optimizer_groups, plan_groups
from dlforge.train.precision import autocast
from dlforge.train.tracking import Tracking


def steps_optimizer(batch_index: int, batches: int, accumulate: int) -> bool:
    """Whether micro-batch `batch_index` (1-based) of an epoch of `batches` ends with an optimizer update:
    every `accumulate`-th one, and the last (a short tail still updates)."""
    return batch_index % accumulate == 0 or batch_index == batches


def updates_per_epoch(batches: int, accumulate: int) -> int:
    """Optimizer updates in one epoch, counted with the very rule the epoch uses (the scheduler's length)."""
    return sum(steps_optimizer(i, batches, accumulate) for i in range(1, batches + 1))


@dataclass
class LoopState:
    """The loop's counters; saved in every checkpoint."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimiser steps
    history: list[dict[str, Any]] = field(default_factory=list)
    best: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    stopped_early: bool = False
    batch: int = 0  # micro-batches done of an unfinished epoch (a mid-epoch checkpoint); 0 between epochs


@dataclass
class Trainer:
    """Everything a training step needs; tasks use its helpers rather than importing the loop."""

    cfg: ExperimentConfig
    ctx: DistContext
    net: nn.Module  # the plain model (saved, exported)
    model: nn.Module  # what runs: maybe DDP- and/or compile-wrapped
    optimizer: Optimizer
    scheduler: LRScheduler
    train_batches: Any  # a StatefulDataLoader (torchdata): a DataLoader whose position can be saved
    val_batches: DataLoader
    task: Task
    info: RunInfo
    augmenter: nn.Module | None = None
    scaler: torch.amp.GradScaler | None = None
    best_state: dict[str, Tensor] | None = None
    freezer: Freezer | None = None  # train.freeze, applied per epoch
    extra: dict[str, Any] = field(default_factory=dict)  # task state with state_dict(), checkpointed
    partial: Tensor | None = None  # this rank's loss sums of an epoch resumed mid-way (from its checkpoint)
    tracking: Tracking = field(default_factory=Tracking)  # train.loggers (none on workers but the main one)
    on_epoch: Callable[[dict[str, Any]], None] | None = None  # sees each history row once it is checkpointed

    @property
    def labels(self) -> list[str]:
        return self.info.labels

    @property
    def monitor(self) -> str:
        return self.cfg.train.monitor or self.task.default_monitor

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Mixed precision (train.precision) for forward passes and losses."""
        return autocast(self.cfg.train.precision, self.ctx.device)

    def sync_gradients(self, optimizer_step: bool) -> contextlib.AbstractContextManager[Any]:
        """Around forward + backward: skips DDP's all-reduce on micro-batches that do not step."""
        return dist.no_sync(self.model, self.ctx, skip=not optimizer_step)

    def backward(self, loss: Tensor) -> None:
        """Backward of `loss` averaged over `train.accumulate` micro-batches, scaled for fp16."""
        scaled = loss / self.cfg.train.accumulate
        (self.scaler.scale(scaled) if self.scaler else scaled).backward()

    def optimizer_update(self) -> None:
        """Unscale, clip, step, zero and advance the schedule of the main optimizer."""
        if self.scaler:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
        if self.cfg.train.grad_clip:
            nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.train.grad_clip)
        if self.scaler:
            self.scaler.step(self.optimizer)  # skipped when the gradients overflowed
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    def make_optimizer(self, params: nn.Module | Iterable[nn.Parameter], settings: OptimizerConfig | None = None
                       ) -> tuple[Optimizer, LRScheduler]:
        """An optimizer (default settings: train.optimizer) with train.scheduler over the same steps — for
        tasks that train several models (a GAN's discriminator) or only part of one. A module's parameters
        are grouped by train.param_groups / layer_decay (regexes on its own parameter names)."""
        return make_optimizer(self.cfg, params, settings, len(self.train_batches))


def make_optimizer(cfg: ExperimentConfig, params: nn.Module | Iterable[nn.Parameter],
                   settings: OptimizerConfig | None, batches_per_epoch: int) -> tuple[Optimizer, LRScheduler]:
    """`Trainer.make_optimizer`; the trainer's own optimizer is built here too, before the trainer exists."""
    t = cfg.train
    settings = settings or t.optimizer
    groups = optimizer_groups(plan_groups(params, t, settings)) if isinstance(params, nn.Module) else params
    optimizer = build_optimizer(groups, settings)
    steps = updates_per_epoch(batches_per_epoch, t.accumulate)
    return optimizer, build_scheduler(optimizer, t.scheduler, settings.lr, steps, t.epochs)
