"""Noise models for denoising: each corrupts a clean batch on the device; the clean batch is the target.

Listed under `denoise.noise` like augmentations (`- gaussian: 0.3`, `- salt_pepper: 0.1`,
`- mask: 0.25`); several ops apply in order. Inputs and outputs stay in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from pydantic import Field
from torch import Tensor

from dlforge.config import ComponentSpec, ConfigError
from dlforge.config.components import Component, resolve
from dlforge.nn.layers import Params
from dlforge.registry import Registry

NOISES: Registry[Component[Any]] = Registry("noise model")
NoiseFn = Callable[[Tensor, torch.Generator | None], Tensor]


class GaussianParams(Params):
    sigma: float = Field(0.3, gt=0, le=2, description="standard deviation, in units of the [0, 1] range")


class SaltPepperParams(Params):
    amount: float = Field(0.1, gt=0, lt=1, description="fraction of pixels set to 0 or 1")


class MaskParams(Params):
    fraction: float = Field(0.25, gt=0, lt=1, description="fraction of pixels zeroed (all channels)")


def _rand(x: Tensor, g: torch.Generator | None, shape: torch.Size | None = None) -> Tensor:
    return torch.rand(shape or x.shape, generator=g, device=x.device, dtype=x.dtype)


def gaussian(p: GaussianParams) -> NoiseFn:
    def apply(x: Tensor, g: torch.Generator | None) -> Tensor:
        return (x + p.sigma * torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)).clamp(0, 1)

    return apply


def salt_pepper(p: SaltPepperParams) -> NoiseFn:
    def apply(x: Tensor, g: torch.Generator | None) -> Tensor:
        hit, salt = _rand(x, g) < p.amount, _rand(x, g) < 0.5
        return torch.where(hit, salt.to(x.dtype), x)

    return apply


def mask(p: MaskParams) -> NoiseFn:
    def apply(x: Tensor, g: torch.Generator | None) -> Tensor:
        keep = _rand(x, g, torch.Size((x.shape[0], 1, *x.shape[2:]))) >= p.fraction
        return x * keep.to(x.dtype)

    return apply


NOISES.add("gaussian", Component(GaussianParams, gaussian, "sigma", "additive gaussian noise, clipped to [0, 1]"))
NOISES.add("salt_pepper", Component(SaltPepperParams, salt_pepper, "amount", "pixels set to 0 or 1 at random"))
NOISES.add("mask", Component(MaskParams, mask, "fraction", "random pixels zeroed (inpainting)"))


class Corruption:
    """The configured noise ops in order; `generator=None` draws from torch's (per-epoch seeded) RNG."""

    def __init__(self, ops: list[NoiseFn]) -> None:
        self.ops = ops

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        for op in self.ops:
            x = op(x, generator)
        return x


def build_corruption(specs: list[ComponentSpec], path: str = "denoise.noise") -> Corruption:
    if not specs:
        raise ConfigError([f"{path}: give at least one noise model, e.g. `- gaussian: 0.3` "
                           f"(available: {', '.join(NOISES.names())})"])
    ops, problems = [], []
    for i, spec in enumerate(specs):
        try:
            component, params = resolve(NOISES, spec, f"{path}[{i}]")
        except ConfigError as exc:
            problems += exc.problems
            continue
        ops.append(component.build(params))
    if problems:
        raise ConfigError(problems)
    return Corruption(ops)
