"""The search space: Optuna suggestions for each dotted key, and the experiment a set of values makes.

A trial's values become `--set` overrides of the experiment file, so a trial is exactly the run
`dlforge train EXPERIMENT --set key=value …` would make, and the best config is that file with them applied.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlforge.config import ConfigError, ExperimentConfig
from dlforge.config.tune import Distribution, TuneConfig

if TYPE_CHECKING:
    import optuna


def suggest(trial: optuna.trial.BaseTrial, space: dict[str, Distribution]) -> dict[str, Any]:
    """One value per key, drawn by the study's sampler (Optuna's names are the dotted keys)."""
    values: dict[str, Any] = {}
    for key, dist in space.items():
        if dist.loguniform is not None:
            values[key] = trial.suggest_float(key, *dist.loguniform, log=True)
        elif dist.uniform is not None:
            values[key] = trial.suggest_float(key, *dist.uniform)
        elif dist.integer is not None:
            values[key] = trial.suggest_int(key, *dist.integer)
        else:
            assert dist.choice is not None
            values[key] = trial.suggest_categorical(key, [_choice_key(v) for v in dist.choice])
            values[key] = _choice_value(values[key])
    return values


def _choice_key(value: Any) -> Any:
    """Optuna stores only None/bool/int/float/str choices: lists and maps (channels: [16, 32]) go as JSON."""
    return json.dumps(value) if isinstance(value, list | dict) else value


def _choice_value(stored: Any) -> Any:
    if isinstance(stored, str) and stored[:1] in "[{":
        return json.loads(stored)
    return stored


def overrides(values: dict[str, Any]) -> list[str]:
    """`--set` strings; values as JSON, which the overrides' YAML parser reads back exactly."""
    return [f"{key}={json.dumps(value)}" for key, value in values.items()]


def trial_experiment(config: Path | None, base: list[str], values: dict[str, Any],
                     extra: list[str] = ()) -> ExperimentConfig:  # type: ignore[assignment]
    from dlforge.experiment import load_experiment

    return load_experiment(config, [*base, *overrides(values), *extra])


def corners(space: dict[str, Distribution]) -> list[dict[str, Any]]:
    """Settings that touch every bound and every choice: each must make a valid experiment."""
    def ends(dist: Distribution) -> list[Any]:
        if dist.choice is not None:
            return list(dist.choice)
        return list(dist.bounds)

    options = {key: ends(dist) for key, dist in space.items()}
    width = max(len(v) for v in options.values())
    return [{key: vals[i % len(vals)] for key, vals in options.items()} for i in range(width)]


def check_space(config: Path | None, base: list[str], tune: TuneConfig, monitor_names: list[str]) -> None:
    """Every key must exist and every bound and choice must make a valid experiment: one error, all problems.

    `monitor_names`: the per-epoch metrics the task records (`tune.metric` must be one of them).
    """
    problems: list[str] = []
    if tune.metric is not None and tune.metric not in monitor_names:
        problems.append(f"tune.metric: '{tune.metric}' is not a per-epoch metric of this task; "
                        f"choose one of {', '.join(monitor_names)}")
    for values in corners(tune.space):
        try:
            trial_experiment(config, base, values)
        except ConfigError as exc:
            for problem in exc.problems:
                key = _key_of(problem, list(tune.space))
                where = f"tune.space.{key} = {json.dumps(values[key])}" if key else "tune.space"
                if (line := f"{where}: {problem}") not in problems:
                    problems.append(line)
    if problems:
        raise ConfigError(problems)


def _key_of(problem: str, keys: list[str]) -> str | None:
    """The space key a problem is about: its path is the key's, or above it (an unknown section)."""
    path = problem.split(":", 1)[0]
    hits = [k for k in keys if k == path or k.startswith(path + ".") or path.startswith(k + ".")]
    return max(hits, key=len) if hits else None
