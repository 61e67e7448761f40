"""Regression: features → one number. A third-party task: dlforge finds it through the `dlforge.tasks`
entry point and runs it through its own loop, evaluation, export and server, unchanged.

Trained on the MSE of the standardised target; validated on MSE, MAE (in the target's units) and R²
(torchmetrics, synchronised across workers); metrics.json sets a scikit-learn linear regression fitted on
the same train split beside them; the ONNX graph answers `prediction` (FP32 [n, 1]) in the target's units.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dlforge.config import ExperimentConfig
from dlforge.data.datasets import DATASETS
from dlforge.data.splits import DataBundle
from dlforge.nn.checks import check_model
from dlforge.taskapi import StepContext, Task
from dlforge_regression.data import TabularPreprocessing, load_regression_data
from dlforge_regression.model import build_regressor

if TYPE_CHECKING:
    from dlforge.runinfo import RunInfo


class RegressionTask(Task):
    name = "regression"
    losses = ("loss",)
    metrics = ("mse", "mae", "r2")
    summary = ("mse", "mae", "r2", "loss")
    default_monitor = "val_r2"
    lower_is_better = frozenset({"val_loss", "val_mse", "val_mae"})

    # --- load time ------------------------------------------------------------------------------

    def check(self, cfg: ExperimentConfig) -> list[str]:
        problems = check_model(cfg.model)
        if cfg.data.dataset in DATASETS and self.name not in DATASETS.get(cfg.data.dataset).tasks:
            regression = [n for n in DATASETS.names() if self.name in DATASETS.get(n).tasks]
            problems.append(f"data.dataset: '{cfg.data.dataset}' is a dataset for "
                            f"{', '.join(DATASETS.get(cfg.data.dataset).tasks)}, not {self.name} — use one with a "
                            f"numeric target: {', '.join(regression)}")
        if cfg.data.classes is not None:
            problems.append("data.classes: a regression target has no classes — remove data.classes")
        if cfg.augment:
            problems.append("augment: the augmentations transform images and mix labels; regression takes none — "
                            "remove the augment list")
        if cfg.train.label_smoothing:
            problems.append("train.label_smoothing: smooths class labels; regression has none — remove it")
        if cfg.export.quantize != "none":
            problems.append("export.quantize: int8 calibration is for classifiers; a regressor is exported in fp32 "
                            "— set export.quantize: none")
        for section in ("gan", "denoise"):
            if getattr(cfg, section) is not None:
                problems.append(f"{section}: belongs to task: {section}; remove it or set task: {section}")
        allowed = ["val_loss", *(f"val_{m}" for m in self.metrics)]
        if cfg.train.monitor is not None and cfg.train.monitor not in allowed:
            problems.append(f"train.monitor: '{cfg.train.monitor}' is not a {self.name} metric "
                            f"(use one of {', '.join(allowed)})")
        return problems

    # --- data and model -------------------------------------------------------------------------

    def load_data(self, cfg: ExperimentConfig, reuse: Path | None = None) -> DataBundle:
        return load_regression_data(cfg)

    def create_model(self, cfg: ExperimentConfig, bundle: DataBundle) -> nn.Module:
        torch.manual_seed(cfg.seed)  # identical initial weights on every worker
        return build_regressor(cfg.model, bundle.input_shape, TabularPreprocessing.of(bundle.preprocessing))

    def build_model(self, cfg: ExperimentConfig, info: RunInfo) -> nn.Module:
        return build_regressor(cfg.model, tuple(info.input_shape))

    # --- training ---------------------------------------------------------------------------------

    def train_step(self, tr: StepContext, batch: Any, optimizer_step: bool) -> dict[str, Tensor]:
        x, y = batch
        variance = TabularPreprocessing.of(tr.info.preprocessing).target_std ** 2  # the standardised target's loss
        with tr.sync_gradients(optimizer_step):  # DDP all-reduces only on the stepping micro-batch
            with tr.autocast():
                prediction = tr.model(x).float().squeeze(-1)
            loss = F.mse_loss(prediction, y) / variance
            tr.backward(loss)
        if optimizer_step:
            tr.optimizer_update()
        return {"loss": loss.detach()}

    # --- evaluation and report ----------------------------------------------------------------------

    def evaluate(self, model: nn.Module, batches: Any, info: RunInfo, device: torch.device) -> dict[str, Any]:
        return evaluate_regressor(model, batches, TabularPreprocessing.of(info.preprocessing).target_std, device)

    def write_report(self, run_dir: Path, metrics: dict[str, Any], info: RunInfo, plots: bool) -> None:
        from dlforge_regression.report import write_regression_report  # scikit-learn and matplotlib: only here

        write_regression_report(run_dir, metrics, plots)

    # --- export -----------------------------------------------------------------------------------

    def export(self, net: nn.Module, bundle: DataBundle, info: RunInfo, cfg: ExperimentConfig, root: Path,
               tolerance: float, quantize: str | None) -> dict[str, Any]:
        from dlforge_regression.export import export_regressor  # onnx is imported only to export

        return export_regressor(net, bundle, info, cfg, root, tolerance, quantize)


@torch.no_grad()
def evaluate_regressor(model: nn.Module, batches: Any, target_std: float, device: torch.device) -> dict[str, Any]:
    """`loss` (MSE of the standardised target, as trained), MSE, MAE and R² in the target's units, over this
    worker's shard; torchmetrics sums the statistics across workers."""
    from torchmetrics import MeanAbsoluteError, MeanMetric, MeanSquaredError, R2Score, SumMetric

    was_training = model.training
    model.eval()
    meters = {"mse": MeanSquaredError(), "mae": MeanAbsoluteError(), "r2": R2Score()}
    meters = {name: meter.to(device) for name, meter in meters.items()}
    loss, samples = MeanMetric().to(device), SumMetric().to(device)
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        prediction = model(x).float().squeeze(-1)
        loss.update(((prediction - y) / target_std) ** 2)
        samples.update(torch.tensor(float(len(y)), device=device))
        for meter in meters.values():
            meter.update(prediction, y)
    model.train(was_training)
    return {"loss": float(loss.compute()), **{name: float(m.compute()) for name, m in meters.items()},
            "samples": int(samples.compute())}


TASK = RegressionTask()
__all__ = ["TASK", "RegressionTask", "evaluate_regressor"]
