"""The denoiser as the task builds it from the experiment (network + the noise it trains against), and the
fixed evaluation noise. Below both the training side (dlforge.tasks.denoise.task) and its report and export.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dlforge.config import ExperimentConfig
from dlforge.config.generative import DenoiseConfig
from dlforge.data.noise import Corruption, build_corruption
from dlforge.nn.build import ModelBuildError, build_layers, layer_specs
from dlforge.train.dist import unwrap

EVAL_NOISE_SEED = 4321


def denoise_settings(cfg: ExperimentConfig) -> DenoiseConfig:
    return cfg.denoise or DenoiseConfig()


class Denoiser(nn.Module):
    """The image-to-image network plus the noise it was trained against (not saved: it is in the config)."""

    def __init__(self, body: nn.Module, corruption: Corruption) -> None:
        super().__init__()
        self.body = body
        self.corruption = corruption

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


def build_denoiser(cfg: ExperimentConfig, image_shape: tuple[int, ...]) -> Denoiser:
    specs, where = layer_specs(cfg.model, image_shape, 0)
    body, out = build_layers(specs, tuple(image_shape), where if cfg.model.layers is None else "model.layers",
                             torch.float32)
    if out != tuple(image_shape):
        raise ModelBuildError(f"model: a denoiser must return images of the input's shape {tuple(image_shape)}, "
                              f"got {out} — end the layers with `- conv2d: {image_shape[0]}` and `- sigmoid`")
    return Denoiser(body, build_corruption(denoise_settings(cfg).noise))


def as_denoiser(model: nn.Module) -> Denoiser:
    """The Denoiser inside `model`'s DDP / torch.compile wrappers, if any."""
    net = unwrap(model)
    if not isinstance(net, Denoiser):
        raise TypeError(f"task denoise expects its Denoiser, got {type(net).__name__}")
    return net


def noisy_batch(denoiser: Denoiser, clean: Tensor, index: int) -> Tensor:
    """The validation/test corruption of batch `index`: the same noise every epoch and every run."""
    g = torch.Generator(device=clean.device).manual_seed(EVAL_NOISE_SEED + index)
    return denoiser.corruption(clean, g)
