"""Denoising report (noisy / denoised / clean rows, PSNR curves) and export (image → image ONNX)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import torch

from dlforge.config import ExperimentConfig
from dlforge.data.samples import take
from dlforge.data.splits import DataBundle, load_data
from dlforge.evaluate.plots import Panel, plot_learning_curves
from dlforge.export.errors import ExportError
from dlforge.export.onnx import session
from dlforge.export.quiet import quiet_exporter
from dlforge.imagegrid import save_grid
from dlforge.preprocessing import ImagePreprocessing, Preprocessing
from dlforge.tasks.denoise.model import Denoiser, as_denoiser, noisy_batch

if TYPE_CHECKING:
    from dlforge.runinfo import RunInfo

IMAGE, DENOISED = "image", "denoised"
EXAMPLES, PARITY_SAMPLES = 12, 64


def write_denoise_report(run_dir: Path) -> None:
    """report/examples.png (rows: noisy, denoised, clean; test split) and report/learning_curves.png."""
    from dlforge.rundir import load_run, read_history
    cfg, _, net = load_run(run_dir)
    report = run_dir / "report"
    report.mkdir(exist_ok=True)
    clean = take(load_data(cfg.data, cfg.seed).test, EXAMPLES)[0]
    noisy = noisy_batch(as_denoiser(net), clean, 0)
    with torch.no_grad():
        out = net(noisy)
    rows = torch.cat([noisy, out, clean]).numpy()
    save_grid(rows, report / "examples.png", columns=len(clean))
    if history := read_history(run_dir):
        plot_learning_curves(history, report / "learning_curves.png", DENOISE_PANELS)


DENOISE_PANELS = (
    Panel("reconstruction loss", (("train_loss", "train"), ("val_loss", "val"))),
    Panel("PSNR on the validation split (dB)", (("val_psnr", "denoised"), ("val_psnr_noisy", "noisy input"))),
)


def export_denoiser(net: Denoiser, bundle: DataBundle, info: RunInfo, cfg: ExperimentConfig, root: Path,
                    tolerance: float, quantize: str | None) -> dict[str, Any]:
    if quantize:
        raise ExportError("export.quantize: int8 is for classifiers; a denoiser is exported in fp32")
    net.eval()
    path = root / "model.onnx"
    noisy = noisy_batch(net, take(bundle.val, PARITY_SAMPLES)[0], 0)
    with quiet_exporter():
        torch.onnx.export(net, (noisy[:2],), str(path), dynamo=True, opset_version=cfg.export.opset,
                          input_names=[IMAGE], output_names=[DENOISED],
                          dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
                          external_data=False, verbose=False)
    onnx.checker.check_model(str(path), full_check=True)
    with torch.no_grad():
        expected = net(noisy).numpy()
    diff = float(np.abs(session(path).run([DENOISED], {IMAGE: noisy.numpy()})[0] - expected).max())
    if not diff <= tolerance:
        raise ExportError(f"{path.name}: ONNX Runtime differs from torch by {diff:.3g} on {len(noisy)} noisy "
                          f"validation images (tolerance {tolerance:g}); set export.tolerance if this is expected")
    shape = [-1, *info.input_shape]
    return {
        "inputs": [{"name": IMAGE, "datatype": "FP32", "shape": shape}],
        "outputs": [{"name": DENOISED, "datatype": "FP32", "shape": shape}],
        "labels": [],
        "preprocessing": _served(info.preprocessing),
        "onnx": {"opset": cfg.export.opset, "parity_max_abs_diff": diff, "tolerance": tolerance,
                 "parity_samples": len(noisy)},
    }


def _served(prep: Preprocessing) -> ImagePreprocessing:
    """The package's preprocessing: the run's image decoding, without the statistics (the graph takes and gives
    [0, 1] images) and with the output's range."""
    image = ImagePreprocessing.of(prep, "a denoiser")
    return ImagePreprocessing(**image.model_dump(exclude={"mean", "std"}), output_range=(0, 1))
