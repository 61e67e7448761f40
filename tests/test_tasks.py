"""The task seam: `task:` is checked at load time, a task module plugs into the shared loop
(several losses, extra state that checkpoints and resumes exactly), and codecs stay torch-free."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dlforge.config import ConfigError, ExperimentConfig, parse_config
from dlforge.experiment import check_experiment
from dlforge.taskapi import TASKS, TaskEntry, get_task
from dlforge.train.checkpoint import list_checkpoints, load_checkpoint
from dlforge.train.run import train_run
from tests.conftest import tiny_config

ROOT = Path(__file__).parents[1]
if "toy_ema" not in TASKS:
    TASKS.add("toy_ema", TaskEntry("tests.toy_task", "dlforge.tasks.classification.serving", "test task"))


def test_unknown_task_is_refused_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"task: unknown task 'clasification' — did you mean 'classification'"):
        check_experiment(parse_config({"task": "clasification"}))


def test_the_task_fills_in_its_default_monitor_and_refuses_foreign_ones() -> None:
    assert check_experiment(parse_config({})).train.monitor == "val_accuracy"
    with pytest.raises(ConfigError, match=r"train.monitor: 'val_bleu' is not a classification metric"):
        check_experiment(parse_config({"train": {"monitor": "val_bleu"}}))


def test_classification_is_the_default_task() -> None:
    task = get_task(parse_config({}).task)
    assert task.name == "classification" and task.default_monitor == "val_accuracy"


def test_a_task_module_trains_through_the_shared_loop_and_resumes_its_extra_state(tmp_path: Path) -> None:
    def config(epochs: int) -> ExperimentConfig:
        return tiny_config(task="toy_ema", model={"arch": "mlp_tiny"},
                           train={"epochs": epochs, "scheduler": {"name": "none"}})

    cfg = config(2)
    train_run(cfg, tmp_path / "straight")
    history = [json.loads(line) for line in (tmp_path / "straight/history.jsonl").read_text().splitlines()]
    assert all(row["train_weight_norm"] > 0 and "train_loss" in row for row in history)
    train_run(config(1), tmp_path / "resumed")
    train_run(cfg, tmp_path / "resumed", resume=True)
    ema = [load_checkpoint(list_checkpoints(tmp_path / run / "checkpoints")[-1])[2]["task"]["ema"]
           for run in ("straight", "resumed")]
    assert ema[0].keys() == ema[1].keys() and all(torch.equal(ema[0][k], ema[1][k]) for k in ema[0])
    assert ema[0]["n_averaged"].item() > 0


def test_serving_codecs_never_import_torch() -> None:
    code = ("import sys, dlforge.serve.app; from dlforge.taskapi import TASKS, get_serving; "
            "[get_serving(n) for n in ('classification', 'seq2seq', 'gan', 'denoise')]; "
            "import dlforge.tasks.classification.codec, dlforge.tasks.seq2seq.codec, dlforge.tasks.gan.codec, "
            "dlforge.tasks.denoise.codec; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})


def test_another_tasks_architecture_is_named_with_its_task() -> None:
    """#30: `--set model.arch=gru_attention` on a classifier names the task that builds it, not "unknown"."""
    from dlforge.config import ConfigError
    from dlforge.experiment import load_experiment

    with pytest.raises(ConfigError, match=r"'gru_attention' is a seq2seq architecture \(task: seq2seq\)"):
        load_experiment(None, ["model.arch=gru_attention"])
    with pytest.raises(ConfigError, match=r"unknown model architecture 'cnn_smal' — did you mean 'cnn_small'"):
        load_experiment(None, ["model.arch=cnn_smal"])  # a typo stays a typo


def test_predict_on_a_task_without_it_names_the_tasks_own_command() -> None:
    """A GAN or translation package given to `dlforge predict` points to the command its task adds."""
    from tests.test_errors import fails_cleanly

    v0 = ROOT / "tests" / "fixtures" / "packages_v0"
    assert "or use dlforge generate" in fails_cleanly(["predict", str(v0 / "dcgan"), "--text", "hi"])
    assert "or use dlforge translate" in fails_cleanly(["predict", str(v0 / "num2words"), "--text", "12"])
