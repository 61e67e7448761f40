"""Filling a package folder from a run directory: files, ONNX + parity, optional int8, manifest fields."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import dlforge
from dlforge.export.errors import PackageError
from dlforge.export.onnx import INPUT, LOGITS, PROBS, check_parity, dynamic_dims, export_onnx
from dlforge.rundir import CONFIG, METRICS, WEIGHTS, RunInfo, load_run

PARITY_SAMPLES, CALIBRATION_SAMPLES = 256, 256
METRIC_KEYS = ("accuracy", "precision", "recall", "f1", "loss")


def signature(info: RunInfo) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """V2 input/output tensor specs, -1 on the dynamic axes."""
    shape = [-1, *info.input_shape]
    for axis in dynamic_dims(info.input_shape, info.integer_input)[1:]:
        shape[axis] = -1
    n = len(info.labels)
    inputs = [{"name": INPUT, "datatype": "INT64" if info.integer_input else "FP32", "shape": shape}]
    outputs = [{"name": name, "datatype": "FP32", "shape": [-1, n]} for name in (LOGITS, PROBS)]
    return inputs, outputs


def _test_metrics(run_dir: Path) -> dict[str, Any]:
    path = run_dir / METRICS
    if not path.is_file():
        return {}
    metrics = json.loads(path.read_text())
    return {k: metrics[k] for k in METRIC_KEYS if k in metrics}


def _preprocessing(info: RunInfo, net: torch.nn.Module) -> dict[str, Any]:
    """The run's preprocessing, plus the embedding table size: the token ids the model can look up."""
    prep = dict(info.preprocessing)
    rows = [m.num_embeddings for m in net.modules() if isinstance(m, torch.nn.Embedding)]
    if rows:
        prep["vocab_size"] = min([*rows, *([prep["vocab_size"]] if isinstance(prep.get("vocab_size"), int) else [])])
    return prep


def _norm_quantize(quantize: str | None, default: str) -> str | None:
    choice = default if quantize is None else quantize
    if choice in ("none", ""):
        return None
    if choice != "int8":
        raise PackageError(f"quantize: {choice!r} is not supported (use int8 or none), e.g. --quantize int8")
    return choice


def build_package(run_dir: Path, root: Path, quantize: str | None, tolerance: float | None) -> dict[str, Any]:
    """Write model files into `root`; returns the manifest fields (all but files/created/format)."""
    from dlforge.data.splits import load_data

    cfg, info, net = load_run(run_dir)
    bundle = load_data(cfg.data, cfg.seed)
    shutil.copyfile(run_dir / WEIGHTS, root / WEIGHTS)
    shutil.copyfile(run_dir / CONFIG, root / CONFIG)
    x_val: Tensor = bundle.val.tensors[0][:PARITY_SAMPLES]
    export_onnx(net, x_val, root / "model.onnx", cfg.export.opset, info.integer_input)
    tol = cfg.export.tolerance if tolerance is None else tolerance
    diff = check_parity(net, root / "model.onnx", x_val, tol)
    inputs, outputs = signature(info)
    fields: dict[str, Any] = {
        "name": cfg.name, "version": cfg.export.version, "task": cfg.task,
        "dlforge_version": dlforge.__version__, "torch_version": torch.__version__,
        "inputs": inputs, "outputs": outputs, "labels": info.labels, "preprocessing": _preprocessing(info, net),
        "onnx": {"opset": cfg.export.opset, "parity_max_abs_diff": diff, "tolerance": tol,
                 "parity_samples": len(x_val)},
        "metrics": _test_metrics(run_dir), "quantized": None,
        "serving": cfg.export.serving.model_dump(),
    }
    if _norm_quantize(quantize, cfg.export.quantize):
        from dlforge.export.quantize import quantize_package

        x_train, (x_test, y_test) = bundle.train.tensors[0], bundle.test.tensors
        fields["quantized"] = quantize_package(net, root, x_train[:CALIBRATION_SAMPLES], x_test, y_test)
    return fields
