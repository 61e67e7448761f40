"""Export the generator: latent [+ class] → image in [0, 1], ONNX with a dynamic batch, parity-checked."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from dlforge.config import ExperimentConfig
from dlforge.export.errors import ExportError
from dlforge.export.onnx import session
from dlforge.export.quiet import quiet_exporter
from dlforge.preprocessing import GeneratorPreprocessing
from dlforge.tasks.gan.nets import GanModel, Generator

if TYPE_CHECKING:
    from dlforge.runinfo import RunInfo

LATENT, CLASS, IMAGE = "latent", "class", "image"
PARITY_SAMPLES = 64


class Conditional(nn.Module):
    def __init__(self, generator: Generator) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, latent: Tensor, label: Tensor) -> Tensor:
        return self.generator(latent, label)


class Unconditional(Conditional):
    def forward(self, latent: Tensor) -> Tensor:  # type: ignore[override]
        return self.generator(latent)


def _examples(generator: Generator, n: int) -> tuple[Tensor, ...]:
    g = torch.Generator().manual_seed(7)
    z = torch.randn(n, generator.latent_dim, generator=g)
    if generator.num_classes:
        return z, torch.arange(n) % generator.num_classes
    return (z,)


def export_generator(net: GanModel, info: RunInfo, cfg: ExperimentConfig, root: Path, tolerance: float,
                     quantize: str | None) -> dict[str, Any]:
    if quantize:
        raise ExportError("export.quantize: int8 is for classifiers; a GAN generator is exported in fp32")
    generator = net.sampler.eval()
    conditional = generator.num_classes > 0
    wrapper = (Conditional if conditional else Unconditional)(generator).eval()
    names = [LATENT, CLASS] if conditional else [LATENT]
    batch = torch.export.Dim("batch")
    shapes = {"latent": {0: batch}, **({"label": {0: batch}} if conditional else {})}
    path = root / "model.onnx"
    with quiet_exporter():
        torch.onnx.export(wrapper, _examples(generator, 2), str(path), dynamo=True, opset_version=cfg.export.opset,
                          input_names=names, output_names=[IMAGE], dynamic_shapes=shapes, external_data=False,
                          verbose=False)
    onnx.checker.check_model(str(path), full_check=True)
    diff = _parity(wrapper, path, names, tolerance)
    shape = list(info.input_shape)
    inputs = [{"name": LATENT, "datatype": "FP32", "shape": [-1, generator.latent_dim]}]
    if conditional:
        inputs.append({"name": CLASS, "datatype": "INT64", "shape": [-1]})
    return {
        "inputs": inputs, "outputs": [{"name": IMAGE, "datatype": "FP32", "shape": [-1, *shape]}],
        "labels": info.labels if conditional else [],
        "preprocessing": GeneratorPreprocessing(
            latent_dim=generator.latent_dim, image_shape=shape, output_range=(0, 1), conditional=conditional,
            seed_to_latent="numpy.random.default_rng(seed).standard_normal(latent_dim, float32)"),
        "onnx": {"opset": cfg.export.opset, "parity_max_abs_diff": diff, "tolerance": tolerance,
                 "parity_samples": PARITY_SAMPLES},
    }


def _parity(wrapper: nn.Module, path: Path, names: list[str], tolerance: float) -> float:
    examples = _examples(wrapper.generator, PARITY_SAMPLES)  # type: ignore[arg-type]
    with torch.no_grad():
        expected = wrapper(*examples).numpy()
    got = session(path).run([IMAGE], {n: t.numpy() for n, t in zip(names, examples, strict=True)})[0]
    diff = float(np.abs(got - expected).max())
    if not diff <= tolerance:
        raise ExportError(f"{path.name}: ONNX Runtime differs from torch by {diff:.3g} on {PARITY_SAMPLES} "
                          f"latents (tolerance {tolerance:g}); set export.tolerance if this is expected")
    return diff
