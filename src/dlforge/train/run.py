"""One worker's whole training job: set-up → data → model → fit → test metrics → files.

This is what `dlforge train` runs in every process, alone or under torchrun. What differs between
kinds of models (data, model, step, metrics, report) is the experiment's task (dlforge.tasks).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from dlforge.config import ExperimentConfig, dump_config
from dlforge.cores import training_threads
from dlforge.data.loaders import eval_loader
from dlforge.data.samples import resolve_workers
from dlforge.data.splits import DataBundle
from dlforge.nn.pretrained import load_pretrained
from dlforge.rundir import CONFIG, PRETRAINED_REPORT, WEIGHTS, prepare_run_dir, training_lock
from dlforge.runinfo import RunInfo
from dlforge.taskapi import get_task
from dlforge.train import dist
from dlforge.train.checkpoint import list_checkpoints, save_weights
from dlforge.train.loop import build_trainer, fit
from dlforge.train.tracking import Tracking
from dlforge.train.trainer import Trainer
from dlforge.vocabulary import Reuse, reuse_vocabulary
from dlforge.weights import pretrained_weights


def start_from_pretrained(cfg: ExperimentConfig, bundle: DataBundle, net: nn.Module, run_dir: Path | None,
                          vocab: Reuse | None = None) -> None:
    """Load `model.pretrained` into `net` (every worker); the main worker prints the report and writes
    it to pretrained.json. A resumed run skips this: its checkpoint holds the weights. Any task's model
    loads by name; only a task with a classifier (`has_classifier`) gets its head replaced. `vocab` says
    what became of the tokenizer (reused from the source, or unchecked) for the report."""
    assert cfg.model.pretrained is not None
    head_classes = bundle.num_classes if get_task(cfg.task).has_classifier else None
    source = pretrained_weights(cfg.model, bundle.input_shape, bundle.num_classes)
    report = load_pretrained(net, source.state, cfg.model.pretrained, head_classes, source.labels,
                             bundle.labels, source.description)
    if vocab is not None:
        report.notes += vocab.notes
        report.warnings = vocab.warnings + report.warnings
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / PRETRAINED_REPORT).write_text(json.dumps(report.as_dict(), indent=2))
        Console(stderr=True, highlight=False, soft_wrap=True).print("\n".join(report.lines()), markup=False)


def write_run_files(cfg: ExperimentConfig, bundle: DataBundle, run_dir: Path) -> RunInfo:
    """config.yaml, run.json and the data's artifacts (e.g. tokenizer.json) into the run directory."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG).write_text(dump_config(cfg))
    for name, content in bundle.artifacts.items():
        (run_dir / name).write_bytes(content)
    info = RunInfo.from_bundle(bundle, cfg.data.dataset)
    info.save(run_dir)
    return info


@dist.record_errors
def train_run(cfg: ExperimentConfig, run_dir: Path, resume: bool = False, overwrite: bool = False,
              on_epoch: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train, then evaluate on the test split (sharded across workers); main worker writes files.

    A non-empty `run_dir` needs `resume` or `overwrite` (see `prepare_run_dir`). After torchrun
    restarts the worker group (`--max-restarts`), training resumes from the last checkpoint by itself.
    `on_epoch` sees every epoch's history row after its checkpoint (an exception it raises ends the run).
    """
    if dist.restart_count() > 0:
        resume, overwrite = True, False
    # One training process per run directory: the main worker holds its lock until the run ends.
    with training_lock(run_dir) if dist.env_rank() == 0 else contextlib.nullcontext():
        return _train_run(cfg, run_dir, resume, overwrite, on_epoch)


def _train_run(cfg: ExperimentConfig, run_dir: Path, resume: bool, overwrite: bool,
               on_epoch: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:
    vocab = reuse_vocabulary(cfg, run_dir if resume else None)  # a text source's tokenizer, not a new one
    cfg = vocab.cfg
    # Every rank checks before joining the group, so no rank can see files another has already written.
    prepare_run_dir(run_dir, cfg, resume, overwrite, clear=dist.env_rank() == 0)
    ctx = dist.setup(cfg.train.device)
    # before any op: the intra-op pool is sized on first use
    torch.set_num_threads(cfg.train.threads or training_threads())
    task = get_task(cfg.task)
    try:
        bundle = task.load_data(cfg, vocab.folder)
        net = task.create_model(cfg, bundle)
        if cfg.model.pretrained is not None and not (resume and list_checkpoints(run_dir / "checkpoints")):
            start_from_pretrained(cfg, bundle, net, run_dir if ctx.is_main else None, vocab)
        info = RunInfo.from_bundle(bundle, cfg.data.dataset)
        if ctx.is_main:
            write_run_files(cfg, bundle, run_dir)
        trainer = build_trainer(cfg, bundle, net, ctx, info)
        trainer.on_epoch = on_epoch
        with tracked(trainer.tracking):
            return _fit_and_test(cfg, run_dir, resume, ctx, bundle, info, trainer)
    finally:
        dist.teardown()


@contextlib.contextmanager
def tracked(tracking: Tracking) -> Iterator[None]:
    """The loggers are closed however the run ends (an MLflow run marked FAILED when it raised)."""
    try:
        yield
    except BaseException:
        tracking.close(ok=False)
        raise
    tracking.close()


def _fit_and_test(cfg: ExperimentConfig, run_dir: Path, resume: bool, ctx: dist.DistContext, bundle: DataBundle,
                  info: RunInfo, trainer: Trainer) -> dict[str, Any]:
    state = fit(trainer, run_dir, resume)
    workers = resolve_workers(cfg.data.workers, bundle.test, ctx.world_size)
    test = eval_loader(bundle.test, cfg.eval.batch_size, ctx.rank, ctx.world_size, workers)
    metrics = trainer.task.evaluate(trainer.net, test, info, ctx.device)
    metrics["epochs"], metrics["stopped_early"] = state.epoch, state.stopped_early
    weights = dist.model_state(trainer.net)  # a collective under FSDP
    if ctx.is_main:
        save_weights(weights, run_dir / WEIGHTS)
        trainer.task.write_report(run_dir, metrics, info, cfg.eval.plots)
        trainer.tracking.finish(cfg, run_dir, metrics)
    dist.barrier(ctx)
    return metrics


def make_model(cfg: ExperimentConfig, bundle: DataBundle) -> Any:
    """The task's freshly initialised model (benchmarks build one outside `train_run`)."""
    return get_task(cfg.task).create_model(cfg, bundle)
