"""metrics.json and the report/ plots for a run directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from dlforge.config import ExperimentConfig
from dlforge.data.loaders import eval_loader
from dlforge.data.splits import load_data
from dlforge.evaluate.metrics import evaluate_model
from dlforge.evaluate.plots import plot_confusion_matrix, plot_learning_curves
from dlforge.rundir import HISTORY, METRICS, load_run


def write_report(run_dir: Path, metrics: dict[str, Any], labels: list[str], plots: bool = True) -> None:
    (run_dir / METRICS).write_text(json.dumps(metrics, indent=2))
    if not plots:
        return
    report = run_dir / "report"
    report.mkdir(exist_ok=True)
    plot_confusion_matrix(metrics["confusion_matrix"], labels, report / "confusion_matrix.png")
    history_file = run_dir / HISTORY
    if history_file.is_file():
        history = [json.loads(line) for line in history_file.read_text().splitlines() if line]
        if history:
            plot_learning_curves(history, report / "learning_curves.png")


def evaluate_run(run_dir: Path, cfg: ExperimentConfig | None = None) -> dict[str, Any]:
    """Recompute the test-split metrics of a finished run in this process and rewrite the report."""
    saved_cfg, info, net = load_run(run_dir)
    cfg = cfg or saved_cfg
    bundle = load_data(cfg.data, cfg.seed)
    device = torch.device("cpu")
    metrics = evaluate_model(net, eval_loader(bundle.test, cfg.eval.batch_size), info.labels, device)
    write_report(run_dir, metrics, info.labels, cfg.eval.plots)
    return metrics
