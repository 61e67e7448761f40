"""The training loop: built once outside (`build_trainer`), then `fit` — short steps, no hidden syncs.

Exact resume: each epoch reseeds the RNG from (seed, epoch, rank) and reshuffles from (seed,
epoch), and a checkpoint holds weights, optimiser, scheduler and loop counters, so a run resumed
from epoch k continues bitwise as if never stopped (on CPU).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dlforge.config import ExperimentConfig
from dlforge.data.loaders import eval_loader, train_loader
from dlforge.data.samples import resolve_workers
from dlforge.data.splits import DataBundle
from dlforge.runinfo import RunInfo
from dlforge.taskapi import Task, get_task
from dlforge.train import checkpoint as ckpt
from dlforge.train import dist
from dlforge.train.dist import DistContext, UnsupportedSetup
from dlforge.train.param_groups import Freezer, check_freeze_setup
from dlforge.train.precision import grad_scaler
from dlforge.train.progress import EpochProgress
from dlforge.train.step import train_epoch
from dlforge.train.tracking import Tracking
from dlforge.train.trainer import LoopState, Trainer, make_optimizer


def build_trainer(cfg: ExperimentConfig, bundle: DataBundle, net: nn.Module, ctx: DistContext,
                  info: RunInfo | None = None) -> Trainer:
    t = cfg.train
    task = get_task(cfg.task)
    net.to(ctx.device)
    check_freeze_setup(t, ctx.distributed)
    head_classes = bundle.num_classes if task.has_classifier else None  # train.freeze: backbone spares the head
    if t.freeze is not None:
        Freezer.build(net, t, head_classes).set_epoch(1)  # DDP registers only what trains at wrap time
    model = wrap(net, cfg, ctx, task)
    net = dist.unwrap(model)  # FSDP shards in place; sync_batchnorm swaps layers
    freezer = Freezer.build(net, t, head_classes) if t.freeze is not None else None
    workers = resolve_workers(cfg.data.workers, bundle.train, ctx.world_size)
    batches = train_loader(bundle.train, t.batch_size, ctx.rank, ctx.world_size, cfg.seed, workers)
    optimizer, scheduler = make_optimizer(cfg, net, None, len(batches))
    augmenter = None
    if cfg.augment:
        from dlforge.data.augment import build_augmenter

        augmenter = build_augmenter(cfg.augment, bundle.input_shape, bundle.num_classes, bundle.integer_input)
        if augmenter is not None:
            augmenter.attach(net)  # SpecAugment masks hook onto the model's front-end
            augmenter = augmenter.to(ctx.device)
    scaler = grad_scaler(t.precision, ctx.device)
    val = eval_loader(bundle.val, cfg.eval.batch_size, ctx.rank, ctx.world_size, workers)
    info = info or RunInfo.from_bundle(bundle, cfg.data.dataset)
    tracking = Tracking(t.loggers if ctx.is_main else (), t.log_every_steps, t.batch_size * t.accumulate)
    trainer = Trainer(cfg, ctx, net, model, optimizer, scheduler, batches, val, task, info, augmenter, scaler,
                      freezer=freezer, tracking=tracking)
    task.setup(trainer)
    return trainer


def wrap(net: nn.Module, cfg: ExperimentConfig, ctx: DistContext, task: Task,
         sync_batchnorm: bool | None = None) -> nn.Module:
    """DDP/FSDP (when distributed), then torch.compile (when asked): what the training step runs."""
    t = cfg.train
    model = dist.wrap_model(net, ctx, t.strategy, t.sync_batchnorm if sync_batchnorm is None else sync_batchnorm,
                            find_unused_parameters=task.unused_parameters)
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


def save(tr: Trainer, state: LoopState, run_dir: Path, sums: Tensor | None = None) -> None:
    """Checkpoint and history, written by the main worker only (every rank gathers under FSDP).

    Inside an epoch (`sums`: this rank's running loss sums), every rank's loader position, RNG and sums
    are gathered into the checkpoint too, so that epoch can be finished exactly."""
    weights, optimizer = dist.model_state(tr.net), dist.optimizer_state(tr.net, tr.optimizer)
    ranks = None
    if sums is not None:
        ranks = dist.gather_objects({"loader": tr.train_batches.state_dict(), "rng": ckpt.rng_state(),
                                     "sums": sums.detach().cpu()}, tr.ctx)
    if not tr.ctx.is_main:
        return
    extra: dict[str, Any] = {"loop": asdict(state), "optimizer": optimizer,
             "scheduler": tr.scheduler.state_dict(), "rng": ckpt.rng_state(),
             "config": tr.cfg.model_dump(mode="json")}
    if tr.scaler:
        extra["scaler"] = tr.scaler.state_dict()
    if tr.extra:
        extra["task"] = {name: obj.state_dict() for name, obj in tr.extra.items()}
    if ranks is not None:
        extra["ranks"] = ranks
    step = state.step if sums is not None else None
    ckpt.save_checkpoint(run_dir / "checkpoints", state.epoch, weights, tr.best_state, extra, step=step)
    write_history(state.history, run_dir / "history.jsonl")


def save_inside_epoch(tr: Trainer, state: LoopState, run_dir: Path, sums: Tensor) -> None:
    save(tr, state, run_dir, sums)
    dist.barrier(tr.ctx)  # the checkpoint is complete before any rank runs on (or is killed)


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
    loop = LoopState(**state["loop"])
    if loop.batch:
        resume_inside_epoch(tr, state["ranks"], found[-1])
    return loop


def resume_inside_epoch(tr: Trainer, ranks: list[dict[str, Any]], where: Path) -> None:
    """This rank's loader position, RNG and running sums from a mid-epoch checkpoint."""
    if len(ranks) != tr.ctx.world_size:
        raise UnsupportedSetup(f"{where} was written inside an epoch by {len(ranks)} training process(es); "
                               f"resume it with --nproc {len(ranks)} (or from an end-of-epoch checkpoint)")
    mine = ranks[tr.ctx.rank]
    tr.train_batches.load_state_dict(mine["loader"])
    ckpt.set_rng_state(mine["rng"])
    tr.partial = mine["sums"]


def fit(tr: Trainer, run_dir: Path, resume: bool = False) -> LoopState:
    """Train until `train.epochs` or early stopping; leaves the final weights in `tr.net`."""
    state = restore(tr, run_dir) if resume else LoopState()
    tr.tracking.start(tr.cfg, run_dir, resume, state.step)
    with EpochProgress(tr.cfg.train.progress and tr.ctx.is_main, tr.cfg.train.epochs) as bar:
        while state.epoch < tr.cfg.train.epochs and not state.stopped_early:
            begin_epoch(tr, state.epoch + 1)
            stats = train_epoch(tr, state, bar, lambda sums: save_inside_epoch(tr, state, run_dir, sums))
            end_epoch(tr, state, stats)
            shown = {*(f"train_{name}" for name in tr.task.losses), "val_loss", tr.monitor}
            bar.end({k: v for k, v in state.history[-1].items() if k in shown})
            save(tr, state, run_dir)
            tr.tracking.epoch(state.history[-1])
            if tr.on_epoch is not None:  # e.g. `dlforge tune`'s pruner, which may stop the run here
                tr.on_epoch(state.history[-1])
            if tr.ctx.is_main:
                tr.task.on_epoch_end(tr.model, run_dir, state.epoch)
    if tr.cfg.train.keep_best and tr.best_state is not None:
        dist.load_model_state(tr.net, tr.best_state)
    return state
