"""`build_model`: a spec (layer list or named architecture) plus the data's shape → a module.

Each layer is built from its predecessor's output shape, found by running a dummy batch through
it, so users never type input sizes and a spec that cannot work fails here, naming the layer.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import Tensor, nn

from dlforge.config import ComponentSpec, ConfigError, ModelConfig
from dlforge.config.components import Component, resolve
from dlforge.errors import UserError
from dlforge.nn.audio import FRONTENDS
from dlforge.nn.layers import LAYERS, LayerShapeError, Params, Shape
from dlforge.nn.timm_arch import build_timm, is_timm


class ModelBuildError(UserError, ValueError):
    """A spec that cannot be built, with the failing layer's path and the shapes involved."""


def probe_shape(module: nn.Module, shape: Shape, dtype: torch.dtype = torch.float32) -> Shape:
    """The output shape (batch excluded) of `module` for inputs of `shape`."""
    was_training = module.training
    module.eval()
    x = torch.zeros((2, *shape), dtype=dtype)
    with torch.no_grad():
        # sequence layers that respect padding take (x, mask); probe them with nothing padded
        out = module(x, torch.ones(x.shape[:2], dtype=torch.bool)) if takes_mask(module) else module(x)
    module.train(was_training)
    return tuple(out.shape[1:])


def build_layers(
    specs: list[ComponentSpec], shape: Shape, path: str, dtype: torch.dtype
) -> tuple[nn.Sequential, Shape]:
    """Build a layer list from `shape`; returns the stack and its output shape."""
    modules: list[nn.Module] = []
    for index, spec in enumerate(specs):
        where = f"{path}[{index}]"
        component, params = resolve(LAYERS, spec, where)
        try:
            module = (residual(params, shape, where) if isinstance(params, ResidualParams)
                      else component.build(params, shape))
            out = probe_shape(module, shape, dtype)
        except (LayerShapeError, RuntimeError, ValueError) as exc:
            if isinstance(exc, ModelBuildError | ConfigError):
                raise
            first_line = str(exc).strip().splitlines()[0]
            raise ModelBuildError(f"{where} ({spec.type}): input shape {shape}: {first_line}") from None
        modules.append(module)
        shape, dtype = out, torch.float32
    return nn.Sequential(*modules), shape


# --- residual: a block of nested layers plus a skip connection -----------------------------
class ResidualParams(Params):
    layers: list[ComponentSpec] = Field(min_length=1)
    activation: str | None = Field(None, description="applied after the sum, e.g. relu")
    projection_norm: bool = Field(False, description="batchnorm after a 1x1 projection")


class Residual(nn.Module):
    """y = act(body(x) + proj(x)); proj is a 1x1 conv / linear when shapes differ, else identity."""

    def __init__(self, body: nn.Sequential, proj: nn.Module, act: nn.Module) -> None:
        super().__init__()
        self.body, self.proj, self.act = body, proj, act

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.body(x) + self.proj(x))


def _projection(shape: Shape, out: Shape, norm: bool) -> nn.Module:
    if shape == out:
        return nn.Identity()
    if len(shape) == 3 and len(out) == 3 and shape[1] % out[1] == 0 and shape[2] % out[2] == 0:
        stride = (shape[1] // out[1], shape[2] // out[2])
        conv = nn.Conv2d(shape[0], out[0], 1, stride, bias=not norm)
        return nn.Sequential(conv, nn.BatchNorm2d(out[0])) if norm else conv
    if len(shape) == len(out) and shape[:-1] == out[:-1]:
        return nn.Linear(shape[-1], out[-1])
    raise LayerShapeError(f"no 1x1 projection maps the skip connection {shape} to the block output {out}")


def residual(p: ResidualParams, shape: Shape, path: str = "residual") -> nn.Module:
    body, out = build_layers(p.layers, shape, f"{path}.layers", torch.float32)
    act = nn.Identity()
    if p.activation:
        component, params = resolve(LAYERS, ComponentSpec(type=p.activation), f"{path}.activation")
        act = component.build(params, out)
    return Residual(body, _projection(shape, out, p.projection_norm), act)


LAYERS.add("residual", Component(ResidualParams, residual, "layers",
                                 "nested layers plus a skip connection (1x1 projection if shapes differ)"))


# --- the whole model -------------------------------------------------------------------------
def takes_mask(module: nn.Module) -> bool:
    """Layers that must know which steps are padding declare `takes_mask = True` and take (x, mask)."""
    return bool(getattr(module, "takes_mask", False))


class MaskedSequential(nn.Sequential):
    """A layer stack over padded token ids: layers with `takes_mask` also get `ids != pad_id`.

    The mask comes from the ids themselves, so an exported graph needs no second input and a client
    cannot send ids and a mask that disagree. State-dict keys are those of nn.Sequential."""

    def __init__(self, *layers: nn.Module, pad_id: int) -> None:
        super().__init__(*layers)
        self.pad_id = pad_id

    def forward(self, x: Tensor) -> Tensor:
        mask = x != self.pad_id
        for layer in self:
            x = layer(x, mask) if takes_mask(layer) else layer(x)
        return x


class InputNormalize(nn.Module):
    """(x - mean) / std inside the model, so exported models take raw [0, 1] inputs."""

    def __init__(self, shape: Shape) -> None:
        super().__init__()
        stat_shape = (shape[0],) + (1,) * (len(shape) - 1) if len(shape) >= 2 else shape
        self.mean: Tensor
        self.std: Tensor
        self.register_buffer("mean", torch.zeros(stat_shape))
        self.register_buffer("std", torch.ones(stat_shape))

    def set_stats(self, mean: list[float], std: list[float]) -> None:
        self.mean.copy_(torch.tensor(mean).reshape(self.mean.shape))
        self.std.copy_(torch.tensor(std).reshape(self.std.shape))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class Net(nn.Module):
    """What dlforge trains and exports: optional input normalisation, then the layer stack."""

    def __init__(self, normalize: nn.Module, body: nn.Module) -> None:
        super().__init__()
        self.normalize, self.body = normalize, body

    def forward(self, x: Tensor) -> Tensor:
        return self.body(self.normalize(x))


def layer_specs(cfg: ModelConfig, input_shape: Shape, num_classes: int,
                facts: dict[str, Any] | None = None) -> tuple[list[ComponentSpec], str]:
    """The layer list for `cfg` (a named architecture expands to one) and the path for errors."""
    if cfg.layers is not None:
        return cfg.layers, "model.layers"
    from dlforge.nn.archs import arch_layers  # archs import this module's registry

    return arch_layers(cfg.arch or "", cfg.params, input_shape, num_classes, facts), f"model (arch {cfg.arch})"


def build_model(cfg: ModelConfig, input_shape: Shape, num_classes: int, integer_input: bool = False,
                pad_id: int | None = None, vocab_size: int | None = None, space_id: int | None = None) -> Net:
    """Build the network for inputs of `input_shape` (batch excluded) and `num_classes` outputs.

    `pad_id`: token inputs padded with this id; padding-aware layers then ignore those steps.
    `vocab_size`, `space_id`: the tokenizer's, for architectures that leave them unset."""
    if is_timm(cfg.arch):
        normalize = nn.Identity() if integer_input else InputNormalize(tuple(input_shape))
        return Net(normalize, build_timm(cfg.arch or "", cfg.params, tuple(input_shape), num_classes))
    specs, path = layer_specs(cfg, input_shape, num_classes, {"vocab_size": vocab_size, "separator": space_id})
    dtype = torch.long if integer_input else torch.float32
    body, out = build_layers(specs, tuple(input_shape), path, dtype)
    if out != (num_classes,):
        raise ModelBuildError(
            f"{path}: the model ends with shape {out} but the data has {num_classes} classes — "
            f"end the layers with `- dense: {num_classes}` (after `- flatten` for images)"
        )
    # token ids are not scaled; waveforms are scaled by their front-end layer (a log-mel needs no mean/std)
    raw = integer_input or (bool(specs) and specs[0].type in FRONTENDS)
    normalize = nn.Identity() if raw else InputNormalize(tuple(input_shape))
    if integer_input and pad_id is not None:
        body = MaskedSequential(*body, pad_id=pad_id)
    return Net(normalize, body)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def parameters_summary(model: nn.Module) -> dict[str, Any]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"parameters": count_parameters(model), "trainable": trainable}
