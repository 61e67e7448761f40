"""The training loop: built once outside (`build_trainer`), then `fit` — short steps, no hidden syncs.

Exact resume: each epoch reseeds the RNG from (seed, epoch, rank) and reshuffles from (seed,
epoch), and a checkpoint holds weights, optimiser, scheduler and loop counters, so a run resumed
from epoch k continues bitwise as if never stopped (on CPU).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader

from dlforge.config import ExperimentConfig
from dlforge.data.loaders import eval_loader, train_loader
from dlforge.data.splits import DataBundle
from dlforge.evaluate.metrics import evaluate_model
from dlforge.train import checkpoint as ckpt
from dlforge.train import dist
from dlforge.train.dist import DistContext
from dlforge.train.optim import build_optimizer, build_scheduler
from dlforge.train.progress import EpochProgress
from dlforge.train.step import grad_scaler, train_epoch


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


@dataclass
class Trainer:
    cfg: ExperimentConfig
    ctx: DistContext
    net: nn.Module  # the plain model (saved, exported)
    model: nn.Module  # what runs: maybe DDP- and/or compile-wrapped
    optimizer: Optimizer
    scheduler: LRScheduler
    train_batches: DataLoader
    val_batches: DataLoader
    labels: list[str]
    augmenter: nn.Module | None = None
    scaler: torch.amp.GradScaler | None = None
    best_state: dict[str, Tensor] | None = None


def build_trainer(cfg: ExperimentConfig, bundle: DataBundle, net: nn.Module, ctx: DistContext) -> Trainer:
    t = cfg.train
    net.to(ctx.device)
    model = dist.wrap_model(net, ctx, t.strategy, t.sync_batchnorm)
    net = dist.unwrap(model)  # FSDP shards in place; sync_batchnorm swaps layers
    if t.compile:
        model = torch.compile(model)  # type: ignore[assignment]
    batches = train_loader(bundle.train, t.batch_size, ctx.rank, ctx.world_size, cfg.seed, cfg.data.num_workers)
    steps = math.ceil(len(batches) / t.accumulate)
    optimizer = build_optimizer(net.parameters(), t.optimizer)
    scheduler = build_scheduler(optimizer, t.scheduler, t.optimizer.lr, steps, t.epochs)
    augmenter = None
    if cfg.augment:
        from dlforge.data.augment import build_augmenter

        augmenter = build_augmenter(cfg.augment, bundle.input_shape, bundle.num_classes)
        if augmenter is not None:
            augmenter.attach(net)  # SpecAugment masks hook onto the model's front-end
            augmenter = augmenter.to(ctx.device)
    scaler = grad_scaler(t.precision, ctx.device)
    val = eval_loader(bundle.val, cfg.eval.batch_size, ctx.rank, ctx.world_size)
    return Trainer(cfg, ctx, net, model, optimizer, scheduler, batches, val, bundle.labels, augmenter, scaler)


def improved(tr: Trainer, state: LoopState, value: float) -> bool:
    minimize = tr.cfg.train.monitor == "val_loss"
    delta = tr.cfg.train.early_stopping.min_delta if tr.cfg.train.early_stopping else 0.0
    if state.best is None:
        return True
    return value < state.best - delta if minimize else value > state.best + delta


def end_epoch(tr: Trainer, state: LoopState, stats: dict[str, float]) -> None:
    """Validate, record history, track the best weights and early stopping."""
    val = evaluate_model(tr.model, tr.val_batches, tr.labels, tr.ctx.device)
    state.epoch += 1
    row = {"epoch": state.epoch, "step": state.step, **stats, "lr": tr.optimizer.param_groups[0]["lr"],
           **{f"val_{k}": val[k] for k in ("loss", "accuracy", "precision", "recall", "f1")}}
    state.history.append(row)
    value = row[tr.cfg.train.monitor]
    if improved(tr, state, value):
        state.best, state.best_epoch, state.bad_epochs = value, state.epoch, 0
        tr.best_state = dist.model_state(tr.net)  # a collective under FSDP: every rank gets here
    else:
        state.bad_epochs += 1
    es = tr.cfg.train.early_stopping
    state.stopped_early = dist.all_agree(es is not None and state.bad_epochs >= es.patience, tr.ctx)


def save(tr: Trainer, state: LoopState, run_dir: Path) -> None:
    """Checkpoint and history, written by the main worker only (every rank gathers under FSDP)."""
    weights, optimizer = dist.model_state(tr.net), dist.optimizer_state(tr.net, tr.optimizer)
    if not tr.ctx.is_main:
        return
    extra = {"loop": asdict(state), "optimizer": optimizer,
             "scheduler": tr.scheduler.state_dict(), "rng": ckpt.rng_state(),
             "config": tr.cfg.model_dump(mode="json")}
    if tr.scaler:
        extra["scaler"] = tr.scaler.state_dict()
    ckpt.save_checkpoint(run_dir / "checkpoints", state.epoch, weights, tr.best_state, extra)
    write_history(state.history, run_dir / "history.jsonl")


def write_history(history: list[dict[str, Any]], path: Path) -> None:
    import json

    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in history))
    tmp.replace(path)


def restore(tr: Trainer, run_dir: Path) -> LoopState:
    """The latest checkpoint's state, or a fresh start when there is none."""
    found = ckpt.list_checkpoints(run_dir / "checkpoints")
    if not found:
        return LoopState()
    weights, best, state = ckpt.load_checkpoint(found[-1])
    dist.load_model_state(tr.net, weights)
    dist.load_optimizer_state(tr.net, tr.optimizer, state["optimizer"])
    tr.scheduler.load_state_dict(state["scheduler"])
    if tr.scaler and "scaler" in state:
        tr.scaler.load_state_dict(state["scaler"])
    tr.best_state = best
    return LoopState(**state["loop"])


def fit(tr: Trainer, run_dir: Path, resume: bool = False) -> LoopState:
    """Train until `train.epochs` or early stopping; leaves the final weights in `tr.net`."""
    state = restore(tr, run_dir) if resume else LoopState()
    with EpochProgress(tr.cfg.train.progress and tr.ctx.is_main, tr.cfg.train.epochs) as bar:
        while state.epoch < tr.cfg.train.epochs and not state.stopped_early:
            stats = train_epoch(tr, state, bar)
            end_epoch(tr, state, stats)
            bar.end({k: v for k, v in state.history[-1].items() if k in ("train_loss", "val_loss", "val_accuracy")})
            save(tr, state, run_dir)
    if tr.cfg.train.keep_best and tr.best_state is not None:
        dist.load_model_state(tr.net, tr.best_state)
    return state
