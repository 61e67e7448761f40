"""Loading an experiment completely: the YAML schema, the task, and every registry-backed component.

`load_config` checks structure; this also checks the task, the dataset's settings and what the task
accepts (model spec, monitor…), so every mistake in the file is reported at load time with its key path.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from dlforge.config import ConfigError, ExperimentConfig, load_config
from dlforge.config.errors import problems_from
from dlforge.data.datasets import DATASETS
from dlforge.registry import RegistryError
from dlforge.tasks import TASKS, get_task


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


def check_experiment(cfg: ExperimentConfig) -> ExperimentConfig:
    """The validated experiment with the task's defaults filled in (e.g. `train.monitor`)."""
    if cfg.task not in TASKS:
        try:
            TASKS.get(cfg.task)
        except RegistryError as exc:
            raise ConfigError([f"task: {exc}"]) from None
    task = get_task(cfg.task)
    problems: list[str] = []
    # tasks with their own dataset registry (seq2seq) check data.dataset themselves
    data_ok = _check_dataset(cfg, problems) if getattr(task, "datasets", None) is None else False
    problems += task.check(cfg)
    if cfg.augment and data_ok:
        from dlforge.data.augment import validate_augment
        from dlforge.data.splits import peek_input_shape

        try:
            validate_augment(cfg.augment, peek_input_shape(cfg.data))
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems)
    if cfg.train.monitor is None:
        cfg.train.monitor = task.default_monitor
    return cfg


def load_experiment(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """The validated experiment; ConfigError lists every problem with its key path."""
    return check_experiment(load_config(path, overrides))
