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
MODEL_SECTIONS = (["model"], ["gan", "discriminator"])  # sections that describe one network (arch or layers)
SWITCHES = [[*section, key] for section in MODEL_SECTIONS for key in ("arch", "layers")]  # replace that network


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"{path}: no such config file"])
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML: {exc}"]) from None
    if raw is None:  # an empty file (or only comments) would silently train the built-in defaults
        raise ConfigError([f"{path}: the file is empty; describe an experiment (see examples/), or leave the "
                           "file out to train the built-in digits CNN"])
    if not isinstance(raw, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of sections (name, data, model…)"])
    return raw


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`train.epochs=5` sets raw['train']['epochs'] = 5; values are parsed as YAML (5, true, [1,2]).

    `model.arch=X` naming another architecture drops the file's `model.params` and `model.layers`
    (they belong to the old model), and `model.layers=[…]` drops `model.arch` and `model.params`; these
    switches apply first, so `model.params.*` overrides hold whatever their position. The same holds
    for every section in MODEL_SECTIONS (e.g. `gan.discriminator.arch`).
    """
    out = copy.deepcopy(raw)
    parsed = [_parse_override(item) for item in overrides]
    for parts, value in sorted(parsed, key=lambda kv: kv[0] not in SWITCHES):  # stable sort: switches first
        if parts in SWITCHES:
            _switch_model(out, parts[:-1], parts[-1], value)
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError([f"--set {'.'.join(parts)}: '{part}' is not a section"])
            node = child
        node[parts[-1]] = value
    return out


def _parse_override(item: str) -> tuple[list[str], Any]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError([f"--set {item!r}: expected key=value, e.g. --set train.epochs=5"])
    try:
        return key.strip().split("."), yaml.safe_load(value)
    except yaml.YAMLError as exc:
        raise ConfigError([f"--set {item!r}: the value is not valid YAML ({exc.__class__.__name__})"]) from None


def _switch_model(raw: dict[str, Any], section: list[str], key: str, value: Any) -> None:
    """Drop the settings of the network being replaced (see apply_overrides)."""
    model: Any = raw
    for part in section:
        model = model.get(part) if isinstance(model, dict) else None
    if isinstance(model, dict) and model.get(key) != value:
        for other in ("arch", "params", "layers"):
            if other != key:
                model.pop(other, None)


def parse_config(raw: dict[str, Any]) -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(problems_from(exc, ExperimentConfig)) from None


def load_raw(path: str | Path | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """The file (or the built-in default) with `--set` overrides applied, not yet validated."""
    return apply_overrides(read_yaml(path if path is not None else DEFAULT_CONFIG), overrides or [])


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """The structural part of loading; `dlforge.experiment.load_experiment` also checks components."""
    return parse_config(load_raw(path, overrides))


def dump_config(cfg: ExperimentConfig) -> str:
    """The resolved config (every default filled in), loadable again with `load_config`."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
