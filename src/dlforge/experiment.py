"""Loading an experiment completely: the YAML schema, the task, and every registry-backed component.

`load_config` checks structure; this also checks the task, the dataset's settings and what the task
accepts (model spec, monitor…), so every mistake in the file is reported at load time with its key path
— all of them at once, also when some sections are structurally broken (the others are still checked).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dlforge.config import ConfigError, ExperimentConfig, parse_config
from dlforge.config.errors import problems_from
from dlforge.config.loading import load_raw
from dlforge.data.datasets import DATASETS
from dlforge.nn.audio import frontend_rate
from dlforge.nn.checks import check_model
from dlforge.registry import RegistryError
from dlforge.taskapi import TASKS, Task, get_task
from dlforge.train.tracking import logger_problems


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


def _check_task(cfg: ExperimentConfig, problems: list[str]) -> Task | None:
    try:
        TASKS.get(cfg.task)
    except RegistryError as exc:
        problems.append(f"task: {exc}")
        return None
    return get_task(cfg.task)


def _check_sample_rate(cfg: ExperimentConfig, problems: list[str]) -> None:
    """An audio front-end's filterbank is built for one rate: it must be the rate the data is resampled to."""
    rate = cfg.data.params.get("sample_rate", 16000) if cfg.data.dataset in ("audio_folder", "shards") else None
    if cfg.model.layers is not None:
        model_rate, where = frontend_rate(cfg.model.layers), "model.layers[0].sample_rate"
    else:
        model_rate, where = cfg.model.params.get("sample_rate"), "model.params.sample_rate"
        if model_rate is None and (cfg.model.arch or "").startswith("audio_"):
            model_rate = 16000
    if rate is not None and model_rate is not None and int(model_rate) != int(rate):
        problems.append(f"{where}: {model_rate} Hz, but data.params.sample_rate is {rate} Hz; "
                        f"set both to the same rate (e.g. {where}: {rate})")


def _other_tasks_arch(cfg: ExperimentConfig, task: Task, problems: list[str]) -> list[str]:
    """An architecture this task does not know but another task builds: say which task, not just "unknown"."""
    arch = cfg.model.arch
    unknown = [p for p in problems if p.startswith("model.arch:") and "unknown" in p]
    if arch is None or not unknown or arch in task.architectures():
        return problems
    owners = [name for name in TASKS.names() if name != cfg.task and arch in get_task(name).architectures()]
    if not owners:
        return problems
    hint = (f"model.arch: '{arch}' is a {owners[0]} architecture (task: {owners[0]}); set `task: {owners[0]}` or "
            f"pick a {cfg.task} architecture (dlforge models lists them by task)")
    return [hint if p in unknown else p for p in problems]


def component_problems(cfg: ExperimentConfig) -> list[str]:
    """Every problem the registries and the task find in a structurally valid config, in file order."""
    problems: list[str] = []
    task = _check_task(cfg, problems)
    # tasks with their own dataset registry (seq2seq) check data.dataset themselves
    data_ok = _check_dataset(cfg, problems) if task is None or not task.own_datasets else False
    model_problems = task.check(cfg) if task is not None else check_model(cfg.model)
    if task is not None:
        model_problems = _other_tasks_arch(cfg, task, model_problems)
    problems += model_problems
    if data_ok and not model_problems:
        _check_sample_rate(cfg, problems)
    if cfg.augment and data_ok:
        from dlforge.data.augment import validate_augment
        from dlforge.data.splits import peek_input_shape

        try:
            validate_augment(cfg.augment, peek_input_shape(cfg.data))
        except ConfigError as exc:
            problems += exc.problems
    problems += logger_problems(cfg.train.loggers)
    return problems


def check_experiment(cfg: ExperimentConfig) -> ExperimentConfig:
    """The validated experiment with the task's defaults filled in (e.g. `train.monitor`)."""
    problems = component_problems(cfg)
    if problems:
        raise ConfigError(problems)
    if cfg.train.monitor is None:
        cfg.train.monitor = get_task(cfg.task).default_monitor
    return cfg


def _section(problem: str) -> str:
    """The top-level key a `key.path: problem` line is about."""
    return problem.split(":", 1)[0].split(".", 1)[0].split("[", 1)[0]


def problems_beside(raw: dict[str, Any]) -> list[str]:
    """The component problems of the sections that are structurally valid, in a config that is not.

    The broken sections are replaced by their defaults to check the rest, and anything said about
    them (or, when `data` is broken, about the augmentations that depend on its shape) is dropped."""
    try:
        ExperimentConfig.model_validate(raw)
        return []
    except ValidationError as exc:
        broken = {str(err["loc"][0]) for err in exc.errors() if err["loc"]}
    if not broken or "task" in broken:  # without a task there is nothing to check the model against
        return []
    try:
        rest = ExperimentConfig.model_validate({k: v for k, v in raw.items() if k not in broken})
    except ValidationError:
        return []
    hidden = broken | ({"augment"} if "data" in broken else set())
    return [p for p in component_problems(rest) if _section(p) not in hidden]


def load_experiment(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """The validated experiment; ConfigError lists every problem, structural and per component, at once."""
    raw = load_raw(path, overrides)
    try:
        cfg = parse_config(raw)
    except ConfigError as exc:
        raise ConfigError(exc.problems + problems_beside(raw)) from None
    return check_experiment(cfg)
