"""The regressor as one ONNX graph: `input` FP32 [n, features] → `prediction` FP32 [n, 1], target units.

dlforge's classifier export adds softmax probabilities, so this writes its own graph with dlforge's
exporter settings and checks: onnx.checker, a dynamic batch axis, parity with torch on validation rows.

Parity is measured on the standardised prediction, (prediction - target_mean) / target_std: in the target's
own units float32 rounding alone grows with the target's size (a few 1e-5 at the diabetes scores' 25…346,
~0.01 for prices near 1e5), so one absolute `export.tolerance` could not fit every target.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import torch
from torch import nn

from dlforge.config import ExperimentConfig
from dlforge.data.splits import DataBundle
from dlforge.export.errors import ExportError
from dlforge.export.onnx import AXIS_NAMES, INPUT, check_dynamic_axes, session
from dlforge.export.quiet import quiet_exporter
from dlforge_regression.data import TabularPreprocessing

if TYPE_CHECKING:
    from dlforge.runinfo import RunInfo

PREDICTION, PARITY_SAMPLES = "prediction", 256


def export_regressor(net: nn.Module, bundle: DataBundle, info: RunInfo, cfg: ExperimentConfig, root: Path,
                     tolerance: float, quantize: str | None) -> dict[str, Any]:
    """Write root/model.onnx, parity-checked against torch; return the manifest's fields."""
    if quantize:
        raise ExportError("export.quantize: int8 calibration is for classifiers; a regressor is exported in fp32 "
                          "— set export.quantize: none (or --quantize none)")
    net.eval()
    path = root / "model.onnx"
    rows = bundle.val.tensors[0][:PARITY_SAMPLES]
    with quiet_exporter():
        torch.onnx.export(net, (rows[:2],), str(path), dynamo=True, opset_version=cfg.export.opset,
                          input_names=[INPUT], output_names=[PREDICTION],
                          dynamic_shapes={"x": {0: torch.export.Dim(AXIS_NAMES[0])}}, external_data=False,
                          verbose=False)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{path.name}: onnx.checker rejected the exported model: {exc}") from None
    check_dynamic_axes(path, {0: AXIS_NAMES[0]})
    in_units = parity_diff(net, path, rows)
    diff = in_units / TabularPreprocessing.of(info.preprocessing).target_std
    if not diff <= tolerance:
        raise ExportError(f"{path.name}: ONNX Runtime differs from torch by {diff:.3g} target standard deviations "
                          f"({in_units:.3g} in the target's units) on {len(rows)} validation rows (tolerance "
                          f"{tolerance:g}); set export.tolerance if this is expected")
    return {
        "inputs": [{"name": INPUT, "datatype": "FP32", "shape": [-1, *info.input_shape]}],
        "outputs": [{"name": PREDICTION, "datatype": "FP32", "shape": [-1, 1]}],
        "labels": info.labels,
        "preprocessing": info.preprocessing,
        "onnx": {"opset": cfg.export.opset, "parity_max_abs_diff": diff, "tolerance": tolerance,
                 "parity_samples": len(rows)},
        "task_info": {"parity": "max |onnx - torch| of (prediction - target_mean) / target_std",
                      "parity_max_abs_diff_target_units": in_units},
    }


def parity_diff(net: nn.Module, path: Path, rows: torch.Tensor) -> float:
    """Max |onnx - torch| of the predictions on `rows`."""
    with torch.no_grad():
        expected = net(rows).numpy()
    (found,) = session(path).run([PREDICTION], {INPUT: rows.numpy()})
    return float(np.abs(found - expected).max())
