"""Layers that grow or reshape images: what generators, autoencoders and U-Nets need.

`reshape` turns a latent vector into a small feature map; `conv_transpose2d` and `upsample` grow it;
`concat_skip` is a U-Net level: nested layers whose output is concatenated with their input.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from dlforge.config import ComponentSpec
from dlforge.config.components import Component
from dlforge.nn.build import build_layers
from dlforge.nn.layers import LAYERS, IntPair, LayerShapeError, Params, Shape, need_rank


class ConvTransposeParams(Params):
    channels: int = Field(ge=1, description="output channels")
    kernel: IntPair = 4
    stride: IntPair = 2
    padding: IntPair = 1
    bias: bool = True


def conv_transpose2d(p: ConvTransposeParams, shape: Shape) -> nn.Module:
    need_rank("conv_transpose2d", shape, (3,), "(channels, height, width)")
    return nn.ConvTranspose2d(shape[0], p.channels, p.kernel, p.stride, p.padding, bias=p.bias)


class UpsampleParams(Params):
    scale: int = Field(2, ge=1, description="integer scale factor")
    mode: Literal["nearest", "bilinear"] = "nearest"


def upsample(p: UpsampleParams, shape: Shape) -> nn.Module:
    need_rank("upsample", shape, (3,), "(channels, height, width)")
    return nn.Upsample(scale_factor=p.scale, mode=p.mode)


class ReshapeParams(Params):
    shape: list[int] = Field(min_length=1, description="target shape without the batch, e.g. [64, 2, 2]")


class Reshape(nn.Module):
    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], *self.shape)


def reshape(p: ReshapeParams, shape: Shape) -> nn.Module:
    if math.prod(p.shape) != math.prod(shape):
        raise LayerShapeError(
            f"reshape to {tuple(p.shape)} needs {math.prod(p.shape)} values per sample but the input {shape} "
            f"has {math.prod(shape)} — change the preceding `dense` to {math.prod(p.shape)} units")
    return Reshape(tuple(p.shape))


class ConcatSkipParams(Params):
    layers: list[ComponentSpec] = Field(min_length=1)


class ConcatSkip(nn.Module):
    """y = concat(x, body(x)) along channels: one U-Net level (body keeps the spatial size)."""

    def __init__(self, body: nn.Sequential) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, self.body(x)], dim=1)


def concat_skip(p: ConcatSkipParams, shape: Shape, path: str = "concat_skip") -> nn.Module:
    body, out = build_layers(p.layers, shape, f"{path}.layers", torch.float32)
    if len(out) != len(shape) or out[1:] != shape[1:]:
        raise LayerShapeError(
            f"concat_skip's layers must keep the size {shape[1:]} (got {out[1:]}): "
            "end a downsampling level with `- upsample: 2`")
    return ConcatSkip(body)


def _register() -> None:
    add = LAYERS.add
    add("conv_transpose2d", Component(ConvTransposeParams, conv_transpose2d, "channels",
                                      "transposed 2-D convolution (kernel 4, stride 2, padding 1 doubles the size)"))
    add("upsample", Component(UpsampleParams, upsample, "scale", "nearest/bilinear upsampling by an integer"))
    add("reshape", Component(ReshapeParams, reshape, "shape", "reshape each sample, e.g. a vector to [C, H, W]"))
    add("concat_skip", Component(ConcatSkipParams, concat_skip, "layers",
                                 "U-Net level: nested layers, output concatenated with the input"))


_register()
