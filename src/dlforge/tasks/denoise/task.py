"""Denoising: image → image. Noise models corrupt clean batches on the device; the clean image is the target.

Metrics are PSNR and SSIM (torchmetrics, synchronised across workers) of the output and, side by
side, of the noisy input, so the gain is plain to see. Validation noise is drawn from a fixed seed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dlforge.config import ConfigError, ExperimentConfig
from dlforge.data.noise import build_corruption
from dlforge.data.splits import DataBundle, load_data
from dlforge.evaluate.image_quality import ssim_kernel
from dlforge.nn import MODELS
from dlforge.nn.checks import check_model
from dlforge.nn.generative_archs import ARCH_TASKS
from dlforge.taskapi import StepContext, Task
from dlforge.tasks.denoise.model import as_denoiser, build_denoiser, denoise_settings, noisy_batch
from dlforge.tasks.gan.task import image_data_problems

if TYPE_CHECKING:
    from dlforge.runinfo import RunInfo

class DenoiseTask(Task):
    name = "denoise"
    losses = ("loss",)
    metrics = ("psnr", "ssim", "psnr_noisy", "ssim_noisy", "psnr_gain")
    summary = ("psnr", "psnr_noisy", "psnr_gain", "ssim", "ssim_noisy", "loss")
    default_monitor = "val_psnr"

    def minimize(self, monitor: str) -> bool:
        return monitor == "val_loss"

    def architectures(self) -> list[str]:
        return sorted(name for name, task in ARCH_TASKS.items() if task == self.name)

    def check(self, cfg: ExperimentConfig) -> list[str]:
        problems = check_model(cfg.model)
        if cfg.model.arch is not None and cfg.model.arch in MODELS and ARCH_TASKS.get(cfg.model.arch) != "denoise":
            problems.append(f"model.arch: '{cfg.model.arch}' does not map images to images; use unet or "
                            "conv_autoencoder (or a layer list ending in `- conv2d: C` and `- sigmoid`)")
        try:
            build_corruption(denoise_settings(cfg).noise)
        except ConfigError as exc:
            problems += exc.problems
        if cfg.gan is not None:
            problems.append("gan: belongs to task: gan; remove it or set task: gan")
        if cfg.export.quantize != "none":
            problems.append("export.quantize: int8 is for classifiers; a denoiser is exported in fp32")
        if cfg.train.monitor is not None and cfg.train.monitor not in ("val_loss", *(f"val_{m}" for m in self.metrics)):
            problems.append(f"train.monitor: '{cfg.train.monitor}' is not a denoise metric (use val_psnr, "
                            "val_ssim or val_loss)")
        return problems + image_data_problems(cfg)

    def load_data(self, cfg: ExperimentConfig, reuse: Path | None = None) -> DataBundle:
        return load_data(cfg.data, cfg.seed, reuse)

    def create_model(self, cfg: ExperimentConfig, bundle: DataBundle) -> nn.Module:
        torch.manual_seed(cfg.seed)
        return build_denoiser(cfg, bundle.input_shape)

    def build_model(self, cfg: ExperimentConfig, info: RunInfo) -> nn.Module:
        return build_denoiser(cfg, tuple(info.input_shape))

    def train_step(self, tr: StepContext, batch: Any, optimizer_step: bool) -> dict[str, Tensor]:
        clean, y = batch
        if tr.augmenter is not None:
            clean, _ = tr.augmenter(clean, y)
        noisy = as_denoiser(tr.model).corruption(clean)  # torch's RNG, reseeded per (epoch, rank): exact resume
        with tr.sync_gradients(optimizer_step):
            with tr.autocast():
                loss = _loss(tr.model(noisy).float(), clean, denoise_settings(tr.cfg).loss)
            tr.backward(loss)
        if optimizer_step:
            tr.optimizer_update()
        return {"loss": loss.detach()}

    def evaluate(self, model: nn.Module, batches: Any, info: RunInfo, device: torch.device) -> dict[str, Any]:
        return evaluate_denoiser(model, batches, device)

    def write_report(self, run_dir: Path, metrics: dict[str, Any], info: RunInfo, plots: bool) -> None:
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        if plots:
            from dlforge.tasks.denoise.report import write_denoise_report

            write_denoise_report(run_dir)

    def export(self, net: nn.Module, bundle: DataBundle, info: RunInfo, cfg: ExperimentConfig, root: Path,
               tolerance: float, quantize: str | None) -> dict[str, Any]:
        from dlforge.tasks.denoise.report import export_denoiser  # onnx is imported only to export

        return export_denoiser(as_denoiser(net), bundle, info, cfg, root, tolerance, quantize)


def _loss(out: Tensor, clean: Tensor, kind: str) -> Tensor:
    return F.mse_loss(out, clean) if kind == "mse" else F.l1_loss(out, clean)


@torch.no_grad()
def evaluate_denoiser(model: nn.Module, batches: Any, device: torch.device) -> dict[str, Any]:
    """Mean PSNR/SSIM of outputs and of noisy inputs over this worker's shard, synced across workers."""
    from torchmetrics import MeanMetric
    from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

    denoiser = as_denoiser(model)
    was_training = model.training
    model.eval()
    meters: dict[str, Any] = {}
    loss = MeanMetric().to(device)
    for i, (clean, _) in enumerate(batches):
        clean = clean.to(device)
        if not meters:
            k = ssim_kernel(clean.shape[-2], clean.shape[-1])
            for side in ("", "_noisy"):
                meters[f"psnr{side}"] = PeakSignalNoiseRatio(data_range=1.0, reduction="elementwise_mean",
                                                             dim=(1, 2, 3)).to(device)
                meters[f"ssim{side}"] = StructuralSimilarityIndexMeasure(data_range=1.0, kernel_size=k).to(device)
        noisy = noisy_batch(denoiser, clean, i)
        out = model(noisy).float()
        loss.update(F.mse_loss(out, clean), weight=len(clean))
        for name, pred in (("psnr", out), ("ssim", out), ("psnr_noisy", noisy), ("ssim_noisy", noisy)):
            meters[name].update(pred, clean)
    model.train(was_training)
    result = {name: float(meter.compute()) for name, meter in meters.items()}
    result["psnr_gain"] = result["psnr"] - result["psnr_noisy"]
    return {"loss": float(loss.compute()), **result}


TASK = DenoiseTask()
__all__ = ["TASK", "DenoiseTask", "evaluate_denoiser"]
