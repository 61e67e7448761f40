"""Optimisers and per-step learning-rate schedules from the `train` section."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

from dlforge.config.schema import OptimizerConfig, SchedulerConfig


def build_optimizer(params: Iterable[torch.nn.Parameter] | list[dict[str, Any]], cfg: OptimizerConfig) -> Optimizer:
    """`params`: parameters, or parameter groups with their own lr / weight_decay (train/param_groups.py)."""
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def cosine_factor(step: int, total: int, warmup: int, floor: float) -> float:
    """Linear warm-up to 1, then cosine decay to `floor` (a fraction of the base lr)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(opt: Optimizer, cfg: SchedulerConfig, lr: float, steps_per_epoch: int,
                    epochs: int) -> LRScheduler:
    """A scheduler stepped once per optimiser step (so resume mid-schedule is exact). It scales every
    parameter group's own lr (the cosine floor `min_lr` is a fraction of the base lr, applied to each)."""
    total = steps_per_epoch * epochs
    if cfg.name == "onecycle":
        return OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=total)  # every group
    if cfg.name == "cosine":
        warmup = round(cfg.warmup_epochs * steps_per_epoch)
        floor = cfg.min_lr / lr
        return LambdaLR(opt, lambda s: cosine_factor(s, total, warmup, floor))
    if cfg.name == "step":
        return LambdaLR(opt, lambda s: cfg.gamma ** ((s // steps_per_epoch) // cfg.step_size))
    return LambdaLR(opt, lambda s: 1.0)
