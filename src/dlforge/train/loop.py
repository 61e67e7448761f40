"""The training loop: built once outside (`build_trainer`), then `fit` — short steps, no hidden syncs.

Exact resume: each epoch reseeds the RNG from (seed, epoch, rank) and reshuffles from (seed,
epoch), and a checkpoint holds weights, optimiser, scheduler and loop counters, so a run resumed
from epoch k continues bitwise as if never stopped (on CPU).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader

from dlforge.config import ExperimentConfig
from dlforge.data.loaders import eval_loader, train_loader
from dlforge.data.splits import DataBundle
from dlforge.evaluate.metrics import evaluate_model
from dlforge.train import checkpoint as ckpt
from dlforge.train.dist import DistContext, all_agree, wrap_model
from dlforge.train.optim import build_optimizer, build_scheduler
from dlforge.train.progress import EpochProgress


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


def autocast(cfg: ExperimentConfig, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if cfg.train.precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if cfg.train.precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def build_trainer(cfg: ExperimentConfig, bundle: DataBundle, net: nn.Module, ctx: DistContext) -> Trainer:
    t = cfg.train
    net.to(ctx.device)
    model = wrap_model(net, ctx, t.sync_batchnorm)
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
            augmenter = augmenter.to(ctx.device)
    scaler = torch.amp.GradScaler("cuda") if t.precision == "fp16" and ctx.device.type == "cuda" else None
    val = eval_loader(bundle.val, cfg.eval.batch_size, ctx.rank, ctx.world_size)
    return Trainer(cfg, ctx, net, model, optimizer, scheduler, batches, val, bundle.labels, augmenter, scaler)


def train_step(tr: Trainer, x: Tensor, y: Tensor, optimizer_step: bool) -> Tensor:
    """Forward/backward on one batch; steps the optimiser every `accumulate` batches."""
    sync = contextlib.nullcontext() if optimizer_step or not tr.ctx.distributed else tr.model.no_sync()  # type: ignore[operator]
    with sync:
        with autocast(tr.cfg, tr.ctx.device):
            loss = F.cross_entropy(tr.model(x), y, label_smoothing=tr.cfg.train.label_smoothing)
        scaled = loss / tr.cfg.train.accumulate
        (tr.scaler.scale(scaled) if tr.scaler else scaled).backward()
    if optimizer_step:
        if tr.scaler:
            tr.scaler.unscale_(tr.optimizer)
        if tr.cfg.train.grad_clip:
            nn.utils.clip_grad_norm_(tr.net.parameters(), tr.cfg.train.grad_clip)
        if tr.scaler:
            tr.scaler.step(tr.optimizer)
            tr.scaler.update()
        else:
            tr.optimizer.step()
        tr.optimizer.zero_grad(set_to_none=True)
        tr.scheduler.step()
    return loss.detach()


def train_epoch(tr: Trainer, state: LoopState, bar: EpochProgress) -> dict[str, float]:
    epoch = state.epoch + 1
    torch.manual_seed(tr.cfg.seed * 1_000_003 + epoch * 1009 + tr.ctx.rank)  # augmentation, dropout
    tr.train_batches.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
    tr.model.train()
    bar.start(epoch, len(tr.train_batches))
    total = torch.zeros((), device=tr.ctx.device)
    seen, started = 0, time.perf_counter()
    last = len(tr.train_batches)
    for i, (x, y) in enumerate(tr.train_batches, start=1):
        x, y = x.to(tr.ctx.device, non_blocking=True), y.to(tr.ctx.device, non_blocking=True)
        if tr.augmenter is not None:
            x, y = tr.augmenter(x, y)
        step = i % tr.cfg.train.accumulate == 0 or i == last
        total += train_step(tr, x, y, step) * len(x)  # stays on device: no per-batch host sync
        state.step += int(step)
        seen += len(x)
        bar.advance()
    elapsed = time.perf_counter() - started
    return {"train_loss": float(total) / max(seen, 1),
            "samples_per_s": seen * tr.ctx.world_size / elapsed, "time_s": elapsed}


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
        tr.best_state = {k: v.detach().clone() for k, v in tr.net.state_dict().items()}
    else:
        state.bad_epochs += 1
    es = tr.cfg.train.early_stopping
    state.stopped_early = all_agree(es is not None and state.bad_epochs >= es.patience, tr.ctx)


def save(tr: Trainer, state: LoopState, run_dir: Path) -> None:
    """Checkpoint and history, on the main worker only."""
    if not tr.ctx.is_main:
        return
    extra = {"loop": asdict(state), "optimizer": tr.optimizer.state_dict(),
             "scheduler": tr.scheduler.state_dict(), "rng": ckpt.rng_state(),
             "config": tr.cfg.model_dump(mode="json")}
    if tr.scaler:
        extra["scaler"] = tr.scaler.state_dict()
    ckpt.save_checkpoint(run_dir / "checkpoints", state.epoch, tr.net.state_dict(), tr.best_state, extra)
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
    tr.net.load_state_dict(weights)
    tr.optimizer.load_state_dict(state["optimizer"])
    tr.scheduler.load_state_dict(state["scheduler"])
    if tr.scaler and "scaler" in state:
        tr.scaler.load_state_dict(state["scaler"])
    tr.best_state = {k: v.to(tr.ctx.device) for k, v in best.items()} if best else None
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
        tr.net.load_state_dict(tr.best_state)
    return state
