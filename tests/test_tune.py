"""`dlforge tune` on Optuna: bad spaces are one error line; a study makes exactly its trials, in parallel
too; a study SIGKILLed inside a trial continues that trial from its checkpoint, losing and repeating none.

The kill is real (tests/worker_hooks SIGKILLs the process right after a chosen mid-epoch checkpoint), so
nothing depends on timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from typer.testing import CliRunner

from dlforge.cli import app
from dlforge.experiment import load_experiment
from tests.test_dist import SRC, WORKER_HOOKS, finish

EXPERIMENT: dict[str, Any] = {
    "name": "tiny_tune",
    "data": {"dataset": "digits"},
    "model": {"arch": "cnn_small", "params": {"channels": [8], "hidden": 16}},
    "train": {"epochs": 2, "batch_size": 64, "progress": False, "optimizer": {"lr": 0.003}},
    "eval": {"plots": False},
    "export": {"enabled": False},
    "tune": {"trials": 3, "pruner": "none", "space": {
        "train.optimizer.lr": {"loguniform": [0.001, 0.01]},
        "model.params.channels": {"choice": [[8], [8, 16]]},
    }},
}


def write(folder: Path, raw: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tune.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def with_tune(**changes: Any) -> dict[str, Any]:
    raw = json.loads(json.dumps(EXPERIMENT))
    raw["tune"].update(changes)
    return raw


def tune(config: Path, out: Path, *extra: str, **env: str) -> subprocess.Popen[bytes]:
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(WORKER_HOOKS)]), "OMP_NUM_THREADS": "1",
                **env}
    return subprocess.Popen([sys.executable, "-m", "dlforge", "tune", str(config), "--out", str(out), *extra],
                            env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def study_trials(out: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=out.name, storage=f"sqlite:///{out / 'study.db'}").get_trials()


@pytest.mark.parametrize(("space", "expected"), [
    ({"train.optimzer.lr": {"loguniform": [0.001, 0.01]}}, "tune.space.train.optimzer.lr = 0.001: train.optimzer: "
                                                           "unknown key — did you mean 'optimizer'?"),
    ({"model.params.widht": {"choice": [16, 32]}}, "tune.space.model.params.widht = 16: model.params.widht: unknown"),
    ({"train.optimizer.lr": {"choice": []}}, "tune.space.train.optimizer.lr: Value error, choice: needs at least"),
    ({"train.optimizer.lr": {"uniform": [0.1, 0.01]}}, "uniform: low (0.1) must be below high (0.01)"),
    ({"train.epochs": {"int": [0, 3]}}, "tune.space.train.epochs = 0: train.epochs: Input should be greater than"),
], ids=["unknown-key", "unknown-param", "empty-choice", "low-above-high", "invalid-bound"])
def test_a_bad_space_is_one_error_line_before_any_trial(tmp_path: Path, space: dict[str, Any],
                                                        expected: str) -> None:
    config = write(tmp_path, with_tune(space=space))
    result = CliRunner(env={"COLUMNS": "300"}).invoke(app, ["tune", str(config), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[0].startswith("error:"), result.output
    assert expected in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out" / "trial-0000").exists()


def test_an_unknown_metric_and_a_missing_section_are_named(tmp_path: Path) -> None:
    runner = CliRunner(env={"COLUMNS": "300"})
    result = runner.invoke(app, ["tune", str(write(tmp_path / "a", with_tune(metric="val_acc")))])
    assert result.exit_code == 2 and "tune.metric: 'val_acc' is not a per-epoch metric" in result.output
    assert "val_accuracy" in result.output
    plain = json.loads(json.dumps(EXPERIMENT))
    del plain["tune"]
    result = runner.invoke(app, ["tune", str(write(tmp_path / "b", plain))])
    assert result.exit_code == 2 and "has no `tune:` section" in result.output


@pytest.mark.slow
def test_parallel_trials_make_exactly_the_study_and_the_best_config_is_a_valid_experiment(tmp_path: Path) -> None:
    config, out = write(tmp_path, with_tune(trials=4)), tmp_path / "study"
    code, stderr = finish(tune(config, out, "--parallel", "2"), timeout=600)
    assert code == 0, stderr
    trials = study_trials(out)
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert all(sorted(t.intermediate_values) == [1, 2] for t in trials)  # one report per epoch
    for t in trials:  # every trial is an ordinary run directory with the values it was given
        run = load_experiment(out / f"trial-{t.number:04d}" / "config.yaml")
        assert run.train.optimizer.lr == pytest.approx(t.params["train.optimizer.lr"])
        assert run.model.params["channels"] == json.loads(t.params["model.params.channels"])
        assert (out / f"trial-{t.number:04d}" / "metrics.json").is_file()
    summary = json.loads((out / "study.json").read_text())
    best = max(trials, key=lambda t: t.value or 0)
    assert summary["best_trial"] == best.number and summary["states"] == {"complete": 4}
    assert summary["best_test"]["accuracy"] == json.loads(
        (out / f"trial-{best.number:04d}" / "metrics.json").read_text())["accuracy"]
    chosen = load_experiment(out / "best.yaml")  # the file trains as it is
    assert chosen.tune is None and chosen.train.optimizer.lr == pytest.approx(best.params["train.optimizer.lr"])
    rows = (out / "trials.csv").read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith("trial,state,val_accuracy,")
    assert (out / "parallel_coordinate.png").stat().st_size > 10_000
    # Run again: the study is complete, so no trial is added.
    result = CliRunner(env={"COLUMNS": "300"}).invoke(app, ["tune", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert len(study_trials(out)) == 4 and "4 trials" in result.output


@pytest.mark.slow
def test_a_study_killed_inside_a_trial_continues_it_and_ends_with_exactly_its_trials(tmp_path: Path) -> None:
    # digits: 1,149 training samples at batch 64 = 18 steps an epoch; checkpoints every 5; killed at step 25
    raw = with_tune(trials=2)
    raw["train"]["checkpoint_every_steps"] = 5
    config, out = write(tmp_path, raw), tmp_path / "study"
    code, _ = finish(tune(config, out, DLFORGE_TEST_KILL_AT_STEP="25"), timeout=300)
    assert code == -9  # SIGKILL: the first trial was cut off in its second epoch
    first = study_trials(out)
    assert [(t.number, t.state) for t in first] == [(0, optuna.trial.TrialState.RUNNING)]
    assert sorted(first[0].intermediate_values) == [1]
    lr = first[0].params["train.optimizer.lr"]
    code, stderr = finish(tune(config, out), timeout=300)
    assert code == 0, stderr
    trials = study_trials(out)
    assert [(t.number, t.state) for t in trials] == [(n, optuna.trial.TrialState.COMPLETE) for n in range(2)]
    assert trials[0].params["train.optimizer.lr"] == lr  # the same trial went on, with its values
    assert sorted(trials[0].intermediate_values) == [1, 2]
    history = (out / "trial-0000" / "history.jsonl").read_text().splitlines()
    assert [json.loads(row)["epoch"] for row in history] == [1, 2]  # continued from its checkpoint
