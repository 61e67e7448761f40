"""The layer registry: every `type` a model spec may use, with its settings and its factory.

A factory gets the validated params and the input shape (batch excluded) and returns a module;
shapes are never typed by the user. The output shape is found by running the module (see build.py).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from dlforge.config.components import Component
from dlforge.errors import UserError
from dlforge.registry import Registry

LAYERS: Registry[Component[Any]] = Registry("layer", plugins="dlforge.layers")
Shape = tuple[int, ...]


class LayerShapeError(UserError, ValueError):
    """A layer cannot take the shape its predecessor produces."""


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoParams(Params):
    pass


IntPair = int | tuple[int, int]


def need_rank(name: str, shape: Shape, ranks: tuple[int, ...], hint: str, fix: str = "") -> None:
    if len(shape) not in ranks:
        raise LayerShapeError(f"{name} expects an input of {hint} but got {shape}{fix}")


# --- convolutions and pooling -------------------------------------------------------------
class ConvParams(Params):
    channels: int = Field(ge=1, description="output channels")
    kernel: IntPair = 3
    stride: IntPair = 1
    padding: IntPair | Literal["same", "valid"] = "same"
    bias: bool = True
    groups: int = Field(1, ge=1)


def _padding(p: ConvParams) -> Any:
    # torch refuses padding='same' with stride > 1; use the usual k//2 there.
    if p.padding == "same" and p.stride not in (1, (1, 1)):
        k = p.kernel if isinstance(p.kernel, int) else p.kernel[0]
        return k // 2
    return p.padding


def conv2d(p: ConvParams, shape: Shape) -> nn.Module:
    need_rank("conv2d", shape, (3,), "(channels, height, width)")
    return nn.Conv2d(shape[0], p.channels, p.kernel, p.stride, _padding(p), bias=p.bias, groups=p.groups)


def conv1d(p: ConvParams, shape: Shape) -> nn.Module:
    need_rank("conv1d", shape, (2,), "(channels, length)")
    # IntPair fields hold ints for 1-d layers (a pair is refused by the rank check's shape probe)
    return nn.Conv1d(shape[0], p.channels, p.kernel, p.stride, _padding(p), bias=p.bias, groups=p.groups)  # type: ignore[arg-type]


class PoolParams(Params):
    kernel: IntPair = 2
    stride: IntPair | None = None
    padding: IntPair = 0


def maxpool2d(p: PoolParams, shape: Shape) -> nn.Module:
    need_rank("maxpool2d", shape, (3,), "(channels, height, width)")
    return nn.MaxPool2d(p.kernel, p.stride, p.padding)


def avgpool2d(p: PoolParams, shape: Shape) -> nn.Module:
    need_rank("avgpool2d", shape, (3,), "(channels, height, width)")
    return nn.AvgPool2d(p.kernel, p.stride, p.padding)


class AdaptivePoolParams(Params):
    size: IntPair = 1


def adaptive_avgpool2d(p: AdaptivePoolParams, shape: Shape) -> nn.Module:
    need_rank("adaptive_avgpool2d", shape, (3,), "(channels, height, width)")
    return nn.AdaptiveAvgPool2d(p.size)


# --- normalisation, regularisation, reshaping --------------------------------------------
class NormParams(Params):
    eps: float = Field(1e-5, gt=0)
    momentum: float = Field(0.1, gt=0, le=1)


def batchnorm2d(p: NormParams, shape: Shape) -> nn.Module:
    need_rank("batchnorm2d", shape, (3,), "(channels, height, width)")
    return nn.BatchNorm2d(shape[0], p.eps, p.momentum)


def batchnorm1d(p: NormParams, shape: Shape) -> nn.Module:
    need_rank("batchnorm1d", shape, (1, 2), "(features,) or (channels, length)")
    return nn.BatchNorm1d(shape[0], p.eps, p.momentum)


class LayerNormParams(Params):
    eps: float = Field(1e-5, gt=0)


def layernorm(p: LayerNormParams, shape: Shape) -> nn.Module:
    return nn.LayerNorm(shape[-1], p.eps)


class DropoutParams(Params):
    p: float = Field(0.5, ge=0, lt=1)


def dropout(p: DropoutParams, shape: Shape) -> nn.Module:
    return nn.Dropout(p.p)


def flatten(p: NoParams, shape: Shape) -> nn.Module:
    return nn.Flatten()


# --- dense, embedding, recurrent --------------------------------------------------------------
class DenseParams(Params):
    units: int = Field(ge=1)
    bias: bool = True


def dense(p: DenseParams, shape: Shape) -> nn.Module:
    need_rank("dense", shape, (1, 2), "(features,) or (steps, features)",
               " — add `- flatten` before it")
    return nn.Linear(shape[-1], p.units, bias=p.bias)


class EmbeddingParams(Params):
    vocab_size: int = Field(ge=1)
    dim: int = Field(ge=1)
    padding_idx: int | None = None


def embedding(p: EmbeddingParams, shape: Shape) -> nn.Module:
    need_rank("embedding", shape, (1,), "token ids (steps,)")
    return nn.Embedding(p.vocab_size, p.dim, padding_idx=p.padding_idx)


# --- activations --------------------------------------------------------------------------
class LeakyParams(Params):
    slope: float = Field(0.01, ge=0)


class SoftmaxParams(Params):
    dim: int = -1


def _activation(module: type[nn.Module]) -> Any:
    return lambda p, shape: module()


def _register() -> None:
    add = LAYERS.add
    add("conv2d", Component(ConvParams, conv2d, "channels", "2-D convolution; padding 'same' by default"))
    add("conv1d", Component(ConvParams, conv1d, "channels", "1-D convolution over (channels, length)"))
    add("maxpool2d", Component(PoolParams, maxpool2d, "kernel", "max pooling"))
    add("avgpool2d", Component(PoolParams, avgpool2d, "kernel", "average pooling"))
    add("adaptive_avgpool2d", Component(AdaptivePoolParams, adaptive_avgpool2d, "size",
                                        "average pooling to a fixed output size (1 = global)"))
    add("batchnorm2d", Component(NormParams, batchnorm2d, None, "batch norm over channels of images"))
    add("batchnorm1d", Component(NormParams, batchnorm1d, None, "batch norm over features/channels"))
    add("layernorm", Component(LayerNormParams, layernorm, None, "layer norm over the last dimension"))
    add("dropout", Component(DropoutParams, dropout, "p", "dropout"))
    add("flatten", Component(NoParams, flatten, None, "flatten all but the batch dimension"))
    add("dense", Component(DenseParams, dense, "units", "fully connected (alias: linear)"))
    add("linear", Component(DenseParams, dense, "units", "fully connected (alias of dense)"))
    add("embedding", Component(EmbeddingParams, embedding, "dim", "token ids → vectors"))
    add("leaky_relu", Component(LeakyParams, lambda p, s: nn.LeakyReLU(p.slope), "slope", "leaky ReLU"))
    add("softmax", Component(SoftmaxParams, lambda p, s: nn.Softmax(p.dim), "dim", "softmax"))
    for name, module in {"relu": nn.ReLU, "gelu": nn.GELU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh,
                         "silu": nn.SiLU, "elu": nn.ELU}.items():
        add(name, Component(NoParams, _activation(module), None, f"{name} activation"))


_register()
# sequence layers (lstm, gru, pool, positional, transformer_encoder): sequence.py, registered by nn/__init__

