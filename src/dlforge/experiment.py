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
from dlforge.nn.audio import frontend_rate
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


def _check_dataset(cfg: ExperimentConfig, problems: list[str]) -> None:
    try:
        entry = DATASETS.get(cfg.data.dataset)
        entry.params.model_validate(cfg.data.params)
    except RegistryError as exc:
        problems.append(f"data.dataset: {exc}")
    except ValidationError as exc:
        problems += problems_from(exc, entry.params, prefix="data.params")


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


def _check_sample_rate(cfg: ExperimentConfig, problems: list[str]) -> None:
    """An audio front-end's filterbank is built for one rate: it must be the rate the data is resampled to."""
    rate = cfg.data.params.get("sample_rate", 16000) if cfg.data.dataset == "audio_folder" else None
    if cfg.model.layers is not None:
        model_rate, where = frontend_rate(cfg.model.layers), "model.layers[0].sample_rate"
    else:
        model_rate, where = cfg.model.params.get("sample_rate"), "model.params.sample_rate"
        if model_rate is None and (cfg.model.arch or "").startswith("audio_"):
            model_rate = 16000
    if rate is not None and model_rate is not None and int(model_rate) != int(rate):
        problems.append(f"{where}: {model_rate} Hz, but data.params.sample_rate is {rate} Hz; "
                        f"set both to the same rate (e.g. {where}: {rate})")


def check_experiment(cfg: ExperimentConfig) -> ExperimentConfig:
    problems: list[str] = []
    _check_dataset(cfg, problems)
    _check_model(cfg, problems)
    if not problems:
        _check_sample_rate(cfg, problems)
    if cfg.augment:
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
