"""The GAN model as the task builds it from the experiment, and what its report and evaluation draw from it:
the lazily loaded sample judge and the fixed-latent sample grid.

Below both the training side (dlforge.tasks.gan.task) and the report (dlforge.tasks.gan.report).
"""

from __future__ import annotations

from functools import partial
from typing import cast

import torch
from torch import Tensor, nn

from dlforge.config import ExperimentConfig
from dlforge.config.generative import GanConfig
from dlforge.tasks.gan.metrics import Judge, generate, load_judge
from dlforge.tasks.gan.nets import GanModel, build_discriminator, build_generator, ema_copy
from dlforge.train.dist import unwrap

GRID_PER_CLASS = 8


def gan_settings(cfg: ExperimentConfig) -> GanConfig:
    return cfg.gan or GanConfig()


def as_gan(model: nn.Module) -> GanModel:
    """The GanModel inside `model`'s DDP / torch.compile wrappers, if any."""
    net = unwrap(model)
    if not isinstance(net, GanModel):
        raise TypeError(f"task gan expects its GanModel, got {type(net).__name__}")
    return net


def build_gan(cfg: ExperimentConfig, image_shape: tuple[int, ...], labels: list[str]) -> GanModel:
    g = gan_settings(cfg)
    classes = len(labels) if g.conditional else 0
    generator = build_generator(cfg.model, image_shape, g.latent_dim, classes, g.embed_dim)
    discriminator = build_discriminator(g.discriminator, image_shape, classes, g.spectral_norm)
    net = GanModel(generator, discriminator, ema_copy(generator) if g.ema_decay > 0 else None)
    net.load_judge = partial(load_judge, g.classifier, image_shape, labels)  # only evaluation needs it
    net.eval_samples, net.grid_every = g.eval_samples, g.grid_every
    return net


def judge(net: GanModel) -> Judge:
    """The sample judge, loaded on first use: export, serving and `generate` never need the classifier."""
    if net.judge is None:
        net.judge = net.load_judge()
    return cast(Judge, net.judge)


def grid_latents(latent_dim: int, num_classes: int) -> tuple[Tensor, Tensor | None]:
    """Fixed latents for the per-epoch sample grid: one row per class (8 columns) or 8x8 samples."""
    g = torch.Generator().manual_seed(0)
    rows = num_classes or GRID_PER_CLASS
    z = torch.randn(rows * GRID_PER_CLASS, latent_dim, generator=g)
    y = torch.arange(rows).repeat_interleave(GRID_PER_CLASS) if num_classes else None
    return z, y


def epoch_grid(model: nn.Module) -> Tensor:
    """The EMA generator's samples on the fixed grid latents (rows = classes)."""
    net = as_gan(model)
    device = next(net.parameters()).device
    z, y = grid_latents(net.generator.latent_dim, net.generator.num_classes)
    return generate(net.sampler, z.to(device), None if y is None else y.to(device)).cpu()
