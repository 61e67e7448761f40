"""Load-time checks of a model spec: every layer's and architecture's settings, with key paths."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from dlforge.config import ConfigError, ModelConfig
from dlforge.config.components import resolve
from dlforge.config.errors import problems_from
from dlforge.nn.archs import MODELS
from dlforge.nn.layers import LAYERS
from dlforge.nn.timm_arch import TimmError, check_timm_arch, is_timm
from dlforge.registry import RegistryError


def check_layers(specs: list[Any], path: str, problems: list[str]) -> None:
    for i, spec in enumerate(specs):
        try:
            _, params = resolve(LAYERS, spec, f"{path}[{i}]")
        except ConfigError as exc:
            problems += exc.problems
            continue
        if spec.type in ("residual", "concat_skip"):
            check_layers(params.layers, f"{path}[{i}].layers", problems)  # type: ignore[attr-defined]


def check_model(model: ModelConfig, path: str = "model", timm: bool = False) -> list[str]:
    """Problems with `model` (a layer list or a named architecture), one `key.path: problem` each.

    `timm`: whether this task builds `timm/<name>` architectures (classifiers only)."""
    problems: list[str] = []
    if model.layers is not None:
        check_layers(model.layers, f"{path}.layers", problems)
        return problems
    if is_timm(model.arch):
        if not timm:
            return [f"{path}.arch: {model.arch}: timm architectures are classifiers (task: classification)"]
        try:
            check_timm_arch(model.arch or "")
        except TimmError as exc:
            problems.append(str(exc))
        return problems
    try:
        component = MODELS.get(model.arch or "")
        component.params.model_validate(model.params)
    except RegistryError as exc:
        problems.append(f"{path}.arch: {exc}")
    except ValidationError as exc:
        problems += problems_from(exc, component.params, prefix=f"{path}.params")
    return problems
