"""One worker's whole training job: set-up → data → model → fit → test metrics → files.

This is what `dlforge train` runs in every process, alone or under torchrun.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from dlforge.config import ExperimentConfig, dump_config
from dlforge.data.datasets import DataError
from dlforge.data.loaders import eval_loader
from dlforge.data.splits import DataBundle, load_data
from dlforge.evaluate.metrics import evaluate_model
from dlforge.evaluate.report import write_report
from dlforge.nn import Net, build_model
from dlforge.nn.build import InputNormalize
from dlforge.rundir import CONFIG, WEIGHTS, RunInfo
from dlforge.train import dist
from dlforge.train.checkpoint import save_weights
from dlforge.train.loop import build_trainer, fit

PID_DIR_ENV = "DLFORGE_TEST_PID_DIR"  # test hook: workers write rank-<r>.pid there
FAIL_RANK_ENV = "DLFORGE_TEST_FAIL_RANK"  # test hook: this rank raises a data error after set-up


def make_model(cfg: ExperimentConfig, bundle: DataBundle) -> Net:
    torch.manual_seed(cfg.seed)  # identical initial weights on every worker
    net = build_model(cfg.model, bundle.input_shape, bundle.num_classes, bundle.integer_input)
    if isinstance(net.normalize, InputNormalize) and "mean" in bundle.preprocessing:
        net.normalize.set_stats(bundle.preprocessing["mean"], bundle.preprocessing["std"])
    return net


def write_run_files(cfg: ExperimentConfig, bundle: DataBundle, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG).write_text(dump_config(cfg))
    RunInfo(list(bundle.input_shape), bundle.labels, bundle.integer_input, bundle.preprocessing,
            cfg.data.dataset).save(run_dir)


def apply_test_hooks(ctx: dist.DistContext) -> None:
    dist.write_pid(ctx, os.environ.get(PID_DIR_ENV))
    if os.environ.get(FAIL_RANK_ENV) == str(ctx.rank):
        raise DataError(f"injected failure on rank {ctx.rank} ({FAIL_RANK_ENV})")


@dist.record_errors
def train_run(cfg: ExperimentConfig, run_dir: Path, resume: bool = False) -> dict[str, Any]:
    """Train, then evaluate on the test split (sharded across workers); main worker writes files.

    After torchrun restarts the worker group (`--max-restarts`), training resumes from the last
    checkpoint by itself.
    """
    ctx = dist.setup(cfg.train.device)
    try:
        bundle = load_data(cfg.data, cfg.seed)
        net = make_model(cfg, bundle)
        if ctx.is_main:
            write_run_files(cfg, bundle, run_dir)
        trainer = build_trainer(cfg, bundle, net, ctx)
        apply_test_hooks(ctx)
        state = fit(trainer, run_dir, resume or dist.restart_count() > 0)
        test = eval_loader(bundle.test, cfg.eval.batch_size, ctx.rank, ctx.world_size)
        metrics = evaluate_model(trainer.net, test, bundle.labels, ctx.device)
        metrics["epochs"], metrics["stopped_early"] = state.epoch, state.stopped_early
        weights = dist.model_state(trainer.net)  # a collective under FSDP
        if ctx.is_main:
            save_weights(weights, run_dir / WEIGHTS)
            write_report(run_dir, metrics, bundle.labels, cfg.eval.plots)
        dist.barrier(ctx)
        return metrics
    finally:
        dist.teardown()
