"""YAML in, validated config out: file loading, `--set a.b=c` overrides, resolved dumps."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from dlforge.config.errors import ConfigError, problems_from
from dlforge.config.schema import ExperimentConfig

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "defaults" / "digits_cnn.yaml"


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"{path}: no such config file"])
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML: {exc}"]) from None
    if not isinstance(raw, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of sections (name, data, model…)"])
    return raw


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`train.epochs=5` sets raw['train']['epochs'] = 5; values are parsed as YAML (5, true, [1,2])."""
    out = copy.deepcopy(raw)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError([f"--set {item!r}: expected key=value, e.g. --set train.epochs=5"])
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError([f"--set {key}: '{part}' is not a section"])
            node = child
        node[parts[-1]] = yaml.safe_load(value)
    return out


def parse_config(raw: dict[str, Any]) -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(problems_from(exc, ExperimentConfig)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """The structural part of loading; `dlforge.experiment.load_experiment` also checks components."""
    raw = read_yaml(path if path is not None else DEFAULT_CONFIG)
    return parse_config(apply_overrides(raw, overrides or []))


def dump_config(cfg: ExperimentConfig) -> str:
    """The resolved config (every default filled in), loadable again with `load_config`."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
