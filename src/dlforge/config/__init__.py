"""Experiment configuration: schema, loading, overrides, error messages."""

from dlforge.config.errors import ConfigError
from dlforge.config.loading import apply_overrides, dump_config, load_config, parse_config, read_yaml
from dlforge.config.schema import (
    ComponentSpec,
    DataConfig,
    EvalConfig,
    ExperimentConfig,
    ExportConfig,
    ModelConfig,
    TrainConfig,
)

__all__ = [
    "ComponentSpec",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "ExperimentConfig",
    "ExportConfig",
    "ModelConfig",
    "TrainConfig",
    "apply_overrides",
    "dump_config",
    "load_config",
    "parse_config",
    "read_yaml",
]
