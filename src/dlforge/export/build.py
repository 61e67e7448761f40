"""Filling a package folder from a run directory: shared files, the task's graph(s), manifest fields."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

import dlforge
from dlforge.export.errors import PackageError
from dlforge.rundir import CONFIG, METRICS, WEIGHTS, load_run
from dlforge.runinfo import RUN_INFO
from dlforge.taskapi import Task, get_task


def _test_metrics(run_dir: Path, task: Task) -> dict[str, Any]:
    """The model card: the test split's loss, size and the task's metrics (`Task.metrics` + `Task.card`)."""
    path = run_dir / METRICS
    if not path.is_file():
        return {}
    metrics = json.loads(path.read_text())
    return {k: metrics[k] for k in dict.fromkeys(("loss", "samples", *task.metrics, *task.card)) if k in metrics}


def _norm_quantize(quantize: str | None, default: str) -> str | None:
    choice = default if quantize is None else quantize
    if choice in ("none", ""):
        return None
    if choice != "int8":
        raise PackageError(f"quantize: {choice!r} is not supported (use int8 or none), e.g. --quantize int8")
    return choice


def build_package(run_dir: Path, root: Path, quantize: str | None, tolerance: float | None) -> dict[str, Any]:
    """Write model files into `root`; returns the manifest fields (all but files/created/format)."""
    cfg, info, net = load_run(run_dir)
    task = get_task(cfg.task)
    quantize = _norm_quantize(quantize, cfg.export.quantize)  # a bad choice fails before the slow part
    bundle = task.load_data(cfg, run_dir)
    for name in (WEIGHTS, CONFIG, RUN_INFO, *info.artifacts):  # the recipe `rundir.rebuild_model` reads
        shutil.copyfile(run_dir / name, root / name)
    tol = cfg.export.tolerance if tolerance is None else tolerance
    fields = task.export(net, bundle, info, cfg, root, tol, quantize)
    return {
        "name": cfg.name, "version": cfg.export.version, "task": cfg.task,
        "dlforge_version": dlforge.__version__, "torch_version": torch.__version__,
        "metrics": _test_metrics(run_dir, task), "quantized": None,
        "serving": cfg.export.serving.model_dump(), **fields,
    }
