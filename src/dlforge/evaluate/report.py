"""Re-evaluating a finished run: the task's test-split metrics, metrics.json and report/ plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dlforge.config import ExperimentConfig
from dlforge.data.loaders import eval_loader
from dlforge.data.samples import resolve_workers
from dlforge.rundir import load_run
from dlforge.taskapi import get_task


def evaluate_run(run_dir: Path, cfg: ExperimentConfig | None = None) -> dict[str, Any]:
    """Recompute the test-split metrics of a finished run in this process and rewrite the report."""
    saved_cfg, info, net = load_run(run_dir)
    cfg = cfg or saved_cfg
    task = get_task(cfg.task)
    bundle = task.load_data(cfg, run_dir)
    test = eval_loader(bundle.test, cfg.eval.batch_size, workers=resolve_workers(cfg.data.workers, bundle.test))
    metrics = task.evaluate(net, test, info, torch.device("cpu"))
    task.write_report(run_dir, metrics, info, cfg.eval.plots)
    return metrics
