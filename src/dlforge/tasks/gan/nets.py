"""GAN networks: a generator (latent [+ class] → image in [0, 1]) and a discriminator (image [+ class] → score).

Both bodies are ordinary layer lists (or named archs expanded to one), so `dlforge layers` documents
them. Conditioning: the generator concatenates a label embedding to the latent; the discriminator
is a projection discriminator (Miyato & Koyama 2018): score = head(φ(x)) + <embed(y), φ(x)>.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from dlforge.config import ConfigError, ModelConfig
from dlforge.nn.build import ModelBuildError, build_layers, layer_specs
from dlforge.nn.layers import Shape


class Generator(nn.Module):
    """z (batch, latent) [+ y (batch,)] → images (batch, C, H, W) in [0, 1]."""

    def __init__(self, body: nn.Module, latent_dim: int, num_classes: int, embed_dim: int) -> None:
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes else None
        self.body = body

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if self.embed is not None:
            if y is None:
                raise ValueError("a conditional generator needs class labels")
            z = torch.cat([z, self.embed(y)], dim=1)
        return torch.sigmoid(self.body(z))


class Discriminator(nn.Module):
    """images [+ y] → one real/fake logit per image."""

    def __init__(self, features: nn.Module, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.features = features
        self.head = nn.Linear(feature_dim, 1)
        self.embed = nn.Embedding(num_classes, feature_dim) if num_classes else None

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.features(x)
        score = self.head(h).squeeze(1)
        if self.embed is not None and y is not None:
            score = score + (self.embed(y) * h).sum(dim=1)
        return score


class GanModel(nn.Module):
    """Generator, discriminator and the generator's EMA copy: one module, so one checkpoint holds all.

    `forward` computes one side's loss so DDP sees every update go through its wrapper (the other
    side's parameters are unused in that pass: the GAN task wraps with find_unused_parameters).
    """

    def __init__(self, generator: Generator, discriminator: Discriminator, ema: Generator | None) -> None:
        super().__init__()
        self.generator, self.discriminator, self.ema = generator, discriminator, ema
        self.ema_steps: Tensor
        self.register_buffer("ema_steps", torch.zeros((), dtype=torch.long))  # checkpointed with the weights
        self.judge: Any = None  # the task's sample judge (a plain attribute: never saved or trained)
        self.load_judge: Callable[[], Any] = lambda: None  # set by the task; called on first evaluation
        self.eval_samples, self.grid_every = 1000, 1

    @property
    def sampler(self) -> Generator:
        """What is evaluated and exported: the EMA generator when there is one."""
        return self.ema if self.ema is not None else self.generator

    def forward(self, side: str, z: Tensor, y: Tensor | None, real: Tensor | None = None,
                loss: str = "hinge") -> Tensor:
        if side == "d":
            with torch.no_grad():
                fake = self.generator(z, y)
            return discriminator_loss(self.discriminator(real, y), self.discriminator(fake, y), loss)
        return generator_loss(self.discriminator(self.generator(z, y), y), loss)


def discriminator_loss(real: Tensor, fake: Tensor, loss: str) -> Tensor:
    if loss == "hinge":
        return torch.relu(1 - real).mean() + torch.relu(1 + fake).mean()
    return (nn.functional.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            + nn.functional.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))


def generator_loss(fake: Tensor, loss: str) -> Tensor:
    if loss == "hinge":
        return -fake.mean()
    return nn.functional.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))  # non-saturating


def _spectral_norm(module: nn.Module) -> nn.Module:
    """Spectral norm on every conv/linear/embedding weight: a 1-Lipschitz critic, stable GAN training."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Conv2d | nn.Linear | nn.Embedding):
            setattr(module, name, nn.utils.parametrizations.spectral_norm(child))
        else:
            _spectral_norm(child)
    return module


def build_generator(cfg: ModelConfig, image_shape: Shape, latent_dim: int, num_classes: int,
                    embed_dim: int, path: str = "model") -> Generator:
    """The generator for images of `image_shape`; archs get the image shape, layer lists the latent."""
    specs, where = layer_specs(cfg, image_shape, num_classes)
    if cfg.layers is not None:
        where = f"{path}.layers"
    in_dim = latent_dim + (embed_dim if num_classes else 0)
    body, out = build_layers(specs, (in_dim,), where, torch.float32)
    if out != tuple(image_shape):
        raise ModelBuildError(
            f"{where}: the generator ends with shape {out} but the images are {tuple(image_shape)} — "
            f"end with `- conv2d: {image_shape[0]}` at size {image_shape[1]}x{image_shape[2]}")
    return Generator(body, latent_dim, num_classes, embed_dim)


def build_discriminator(cfg: ModelConfig, image_shape: Shape, num_classes: int, spectral_norm: bool,
                        path: str = "gan.discriminator") -> Discriminator:
    """The discriminator: a layer list ending in a feature vector; the head is added here."""
    specs, where = layer_specs(cfg, image_shape, num_classes)
    if cfg.layers is not None:
        where = f"{path}.layers"
    features, out = build_layers(specs, tuple(image_shape), where, torch.float32)
    if len(out) != 1:
        raise ModelBuildError(f"{where}: the discriminator must end with a feature vector "
                              f"(add `- flatten`), got shape {out}")
    disc = Discriminator(features, out[0], num_classes)
    return _spectral_norm(disc) if spectral_norm else disc  # type: ignore[return-value]


def ema_copy(generator: Generator) -> Generator:
    """A frozen copy whose weights follow the trained generator by exponential moving average."""
    ema = copy.deepcopy(generator)
    for p in ema.parameters():
        p.requires_grad_(False)
    return ema


def ema_decay_at(step: int, decay: float) -> float:
    """Warm-up: average over the steps seen so far until `decay` is reached, so early EMAs are not mostly init."""
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, m in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(m.detach(), 1 - decay)
    for eb, mb in zip(ema.buffers(), model.buffers(), strict=True):
        eb.copy_(mb)


def check_image_shape(shape: Any, what: str) -> Shape:
    if len(shape) != 3:
        raise ConfigError([f"data.dataset: {what} needs images (channels, height, width), got samples of {shape}"])
    return tuple(shape)
