"""Loading an experiment completely: the YAML schema plus every registry-backed component.

`load_config` checks structure; this also checks each layer's and augmentation's settings and the
dataset's, so every mistake in the file is reported at load time with its key path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from dlforge.config import ComponentSpec, ConfigError, DataConfig, ExperimentConfig, ModelConfig, parse_config
from dlforge.config.components import resolve
from dlforge.config.errors import problems_from
from dlforge.config.loading import load_raw
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


def _check_dataset(data: DataConfig, problems: list[str]) -> bool:
    """Whether the dataset and its params are valid (only then is its input shape known)."""
    try:
        entry = DATASETS.get(data.dataset)
        entry.params.model_validate(data.params)
    except RegistryError as exc:
        problems.append(f"data.dataset: {exc}")
        return False
    except ValidationError as exc:
        problems += problems_from(exc, entry.params, prefix="data.params")
        return False
    return True


def _check_model(model: ModelConfig, problems: list[str]) -> None:
    if model.layers is not None:
        _check_layers(model.layers, "model.layers", problems)
        return
    try:
        component = MODELS.get(model.arch or "")
        component.params.model_validate(model.params)
    except RegistryError as exc:
        problems.append(f"model.arch: {exc}")
    except ValidationError as exc:
        problems += problems_from(exc, component.params, prefix="model.params")


def _check_augment(augment: list[ComponentSpec], data: DataConfig, problems: list[str]) -> None:
    from dlforge.data.augment import validate_augment
    from dlforge.data.splits import peek_input_shape

    try:
        validate_augment(augment, peek_input_shape(data))
    except ConfigError as exc:
        problems += exc.problems


def component_problems(data: DataConfig | None, model: ModelConfig | None,
                       augment: list[ComponentSpec] | None) -> list[str]:
    """What the registries say about each section that is structurally valid (None: not checkable)."""
    problems: list[str] = []
    data_ok = data is not None and _check_dataset(data, problems)
    if model is not None:
        _check_model(model, problems)
    if augment and data_ok:
        _check_augment(augment, data, problems)  # type: ignore[arg-type]
    return problems


def check_experiment(cfg: ExperimentConfig) -> ExperimentConfig:
    """`cfg` itself when every component is valid; ConfigError lists every problem otherwise."""
    problems = component_problems(cfg.data, cfg.model, cfg.augment)
    if problems:
        raise ConfigError(problems)
    return cfg


def _section(raw: dict[str, Any], name: str, adapter: TypeAdapter[Any]) -> Any:
    """One section of a config that failed as a whole, validated alone (None when it fails too)."""
    field = ExperimentConfig.model_fields[name]
    value = raw[name] if name in raw else field.get_default(call_default_factory=True)
    try:
        return adapter.validate_python(value)
    except ValidationError:
        return None  # its own problems are already in the whole config's list


def load_experiment(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """The validated experiment; ConfigError lists every problem, structural and per component, at once."""
    raw = load_raw(path, overrides)
    try:
        cfg = parse_config(raw)
    except ConfigError as exc:  # still check the sections that are valid on their own
        sections = (_section(raw, "data", _DATA), _section(raw, "model", _MODEL), _section(raw, "augment", _AUGMENT))
        raise ConfigError(exc.problems + component_problems(*sections)) from None
    return check_experiment(cfg)


_DATA, _MODEL, _AUGMENT = TypeAdapter(DataConfig), TypeAdapter(ModelConfig), TypeAdapter(list[ComponentSpec])
