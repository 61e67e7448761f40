"""Loading an experiment completely: the YAML schema plus every registry-backed component.

`load_config` checks structure; this also checks each layer's and augmentation's settings and the
dataset's, so every mistake in the file is reported at load time with its key path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dlforge.config import ConfigError, ExperimentConfig, load_config
from dlforge.config.components import resolve
from dlforge.config.errors import problems_from
from dlforge.data.datasets import DATASETS
from dlforge.nn import LAYERS, MODELS
from dlforge.registry import RegistryError


def _check_layers(specs: list[Any], path: str, problems: list[str]) -> None:
    for i, spec in enumerate(specs):
        try:
            _, params = resolve(LAYERS, spec, f"{path}[{i}]")
        except ConfigError as exc:
            problems += exc.problems
            continue
        if spec.type == "residual":
            _check_layers(params.layers, f"{path}[{i}].layers", problems)  # type: ignore[attr-defined]


def _check_dataset(cfg: ExperimentConfig, problems: list[str]) -> bool:
    """Whether the dataset and its params are valid (only then can its input shape be known)."""
    try:
        entry = DATASETS.get(cfg.data.dataset)
        entry.params.model_validate(cfg.data.params)
    except RegistryError as exc:
        problems.append(f"data.dataset: {exc}")
        return False
    except ValidationError as exc:
        problems += problems_from(exc, entry.params, prefix="data.params")
        return False
    return True


def _check_model(cfg: ExperimentConfig, problems: list[str]) -> None:
    if cfg.model.layers is not None:
        _check_layers(cfg.model.layers, "model.layers", problems)
        return
    try:
        component = MODELS.get(cfg.model.arch or "")
        component.params.model_validate(cfg.model.params)
    except RegistryError as exc:
        problems.append(f"model.arch: {exc}")
    except ValidationError as exc:
        problems += problems_from(exc, component.params, prefix="model.params")


def check_experiment(cfg: ExperimentConfig) -> ExperimentConfig:
    problems: list[str] = []
    data_ok = _check_dataset(cfg, problems)
    _check_model(cfg, problems)
    if cfg.augment and data_ok:
        from dlforge.data.augment import validate_augment
        from dlforge.data.splits import peek_input_shape

        try:
            validate_augment(cfg.augment, peek_input_shape(cfg.data))
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems)
    return cfg


def load_experiment(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """The validated experiment; ConfigError lists every problem with its key path."""
    return check_experiment(load_config(path, overrides))
