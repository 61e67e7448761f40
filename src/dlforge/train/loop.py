"""The training loop: built once outside (`build_trainer`), then `fit` — short steps, no hidden syncs.

Exact resume: each epoch reseeds the RNG from (seed, epoch, rank) and reshuffles from (seed,
epoch), and a checkpoint holds weights, optimiser, scheduler and loop counters, so a run resumed
from epoch k continues bitwise as if never stopped (on CPU).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader

from dlforge.config import ExperimentConfig
from dlforge.config.schema import OptimizerConfig
from dlforge.data.loaders import eval_loader, train_loader
from dlforge.data.splits import DataBundle
from dlforge.rundir import RunInfo
from dlforge.tasks import Task, get_task
from dlforge.train import checkpoint as ckpt
from dlforge.train import dist
from dlforge.train.dist import DistContext
from dlforge.train.optim import build_optimizer, build_scheduler
from dlforge.train.param_groups import Freezer, check_freeze_setup, optimizer_groups, plan_groups
from dlforge.train.progress import EpochProgress
from dlforge.train.step import autocast, grad_scaler, optimizer_update, train_epoch


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
    """Everything a training step needs; tasks use its helpers rather than importing the loop."""

    cfg: ExperimentConfig
    ctx: DistContext
    net: nn.Module  # the plain model (saved, exported)
    model: nn.Module  # what runs: maybe DDP- and/or compile-wrapped
    optimizer: Optimizer
    scheduler: LRScheduler
    train_batches: DataLoader
    val_batches: DataLoader
    task: Task
    info: RunInfo
    augmenter: nn.Module | None = None
    scaler: torch.amp.GradScaler | None = None
    best_state: dict[str, Tensor] | None = None
    freezer: Freezer | None = None  # train.freeze, applied per epoch
    extra: dict[str, Any] = field(default_factory=dict)  # task state with state_dict(), checkpointed

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
        optimizer_update(self)

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
    steps = math.ceil(batches_per_epoch / t.accumulate)
    return optimizer, build_scheduler(optimizer, t.scheduler, settings.lr, steps, t.epochs)


def build_trainer(cfg: ExperimentConfig, bundle: DataBundle, net: nn.Module, ctx: DistContext,
                  info: RunInfo | None = None) -> Trainer:
    t = cfg.train
    task = get_task(cfg.task)
    net.to(ctx.device)
    check_freeze_setup(t, ctx.distributed)
    head_classes = bundle.num_classes if getattr(task, "has_classifier", False) else None  # freeze: backbone
    if t.freeze is not None:
        Freezer.build(net, t, head_classes).set_epoch(1)  # DDP registers only what trains at wrap time
    model = wrap(net, cfg, ctx, task)
    net = dist.unwrap(model)  # FSDP shards in place; sync_batchnorm swaps layers
    freezer = Freezer.build(net, t, head_classes) if t.freeze is not None else None
    batches = train_loader(bundle.train, t.batch_size, ctx.rank, ctx.world_size, cfg.seed, cfg.data.num_workers)
    optimizer, scheduler = make_optimizer(cfg, net, None, len(batches))
    augmenter = None
    if cfg.augment:
        from dlforge.data.augment import build_augmenter

        augmenter = build_augmenter(cfg.augment, bundle.input_shape, bundle.num_classes)
        if augmenter is not None:
            augmenter = augmenter.to(ctx.device)
    scaler = grad_scaler(t.precision, ctx.device)
    val = eval_loader(bundle.val, cfg.eval.batch_size, ctx.rank, ctx.world_size)
    info = info or RunInfo.from_bundle(bundle, cfg.data.dataset)
    trainer = Trainer(cfg, ctx, net, model, optimizer, scheduler, batches, val, task, info, augmenter, scaler,
                      freezer=freezer)
    task.setup(trainer)
    return trainer


def wrap(net: nn.Module, cfg: ExperimentConfig, ctx: DistContext, task: Task,
         sync_batchnorm: bool | None = None) -> nn.Module:
    """DDP/FSDP (when distributed), then torch.compile (when asked): what the training step runs."""
    t = cfg.train
    # a task whose passes each update one of several models (GAN) leaves parameters unused per pass
    unused = getattr(task, "unused_parameters", False)
    model = dist.wrap_model(net, ctx, t.strategy, t.sync_batchnorm if sync_batchnorm is None else sync_batchnorm,
                            find_unused_parameters=unused)
    return torch.compile(model) if t.compile else model  # type: ignore[return-value]


def begin_epoch(tr: Trainer, epoch: int) -> None:
    """Apply train.freeze for this epoch; DDP is rebuilt when the set of trainable parameters changes."""
    if tr.freezer is not None and tr.freezer.set_epoch(epoch) and tr.ctx.distributed:
        tr.model = wrap(tr.net, tr.cfg, tr.ctx, tr.task, sync_batchnorm=False)  # layers were converted already


def improved(tr: Trainer, state: LoopState, value: float) -> bool:
    minimize = tr.task.minimize(tr.monitor)
    delta = tr.cfg.train.early_stopping.min_delta if tr.cfg.train.early_stopping else 0.0
    if state.best is None:
        return True
    return value < state.best - delta if minimize else value > state.best + delta


def end_epoch(tr: Trainer, state: LoopState, stats: dict[str, float]) -> None:
    """Validate, record history, track the best weights and early stopping."""
    val = tr.task.evaluate(tr.model, tr.val_batches, tr.info, tr.ctx.device)
    state.epoch += 1
    row = {"epoch": state.epoch, "step": state.step, **stats, "lr": max(g["lr"] for g in tr.optimizer.param_groups),
           **{f"val_{k}": val[k] for k in ("loss", *tr.task.metrics)}}
    state.history.append(row)
    value = row[tr.monitor]
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
    if tr.extra:
        extra["task"] = {name: obj.state_dict() for name, obj in tr.extra.items()}
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
    for name, saved in state.get("task", {}).items():
        tr.extra[name].load_state_dict(saved)
    tr.best_state = best
    return LoopState(**state["loop"])


def fit(tr: Trainer, run_dir: Path, resume: bool = False) -> LoopState:
    """Train until `train.epochs` or early stopping; leaves the final weights in `tr.net`."""
    state = restore(tr, run_dir) if resume else LoopState()
    with EpochProgress(tr.cfg.train.progress and tr.ctx.is_main, tr.cfg.train.epochs) as bar:
        while state.epoch < tr.cfg.train.epochs and not state.stopped_early:
            begin_epoch(tr, state.epoch + 1)
            stats = train_epoch(tr, state, bar)
            end_epoch(tr, state, stats)
            shown = {*(f"train_{name}" for name in tr.task.losses), "val_loss", tr.monitor}
            bar.end({k: v for k, v in state.history[-1].items() if k in shown})
            save(tr, state, run_dir)
            epoch_end = getattr(tr.task, "on_epoch_end", None)  # optional: per-epoch artifacts (GAN grids)
            if epoch_end is not None and tr.ctx.is_main:
                epoch_end(tr.model, run_dir, state.epoch)
    if tr.cfg.train.keep_best and tr.best_state is not None:
        dist.load_model_state(tr.net, tr.best_state)
    return state
