"""Shared fixtures: tiny experiment configs that train in seconds on 2 CPU cores."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from dlforge.config import ExperimentConfig, parse_config

# One torch thread in this process and in every process it starts (`dlforge run` / `train` / `serve`
# subprocesses read OMP_NUM_THREADS): the suite runs several processes on 2 cores, and torch's spinning
# thread pool under contention made the 20-epoch augmentation test time out at 300 s where one thread
# trains it in 22 s on the same loaded machine.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


def tiny_config(**sections: Any) -> ExperimentConfig:
    """A digits experiment small enough for unit tests; sections override whole keys."""
    raw: dict[str, Any] = {
        "name": "tiny",
        "data": {"dataset": "digits"},
        "model": {"arch": "cnn_tiny"},
        "train": {"epochs": 2, "batch_size": 64, "progress": False, "optimizer": {"lr": 0.01}},
        "eval": {"plots": False},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return parse_config(raw)


@pytest.fixture
def tiny() -> ExperimentConfig:
    return tiny_config()


@pytest.fixture(scope="session")
def model_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real exported package of a tiny digits CNN, trained once per test session (1 epoch)."""
    from dlforge.export.package import export_run
    from dlforge.train.run import train_run

    run_dir = tmp_path_factory.mktemp("served") / "run"
    cfg = tiny_config(train={"epochs": 1})
    train_run(cfg, run_dir)
    return export_run(run_dir)


@pytest.fixture(scope="session")
def gru_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real exported package of a tiny GRU over token ids (vocabulary 20, sequences of any length)."""
    from dlforge.export.package import export_run
    from dlforge.train.run import train_run

    run_dir = tmp_path_factory.mktemp("gru") / "run"
    cfg = tiny_config(name="gru", train={"epochs": 1},
                      data={"dataset": "synthetic", "params": {"shape": [6], "kind": "tokens", "vocab_size": 20,
                                                               "n_samples": 64}},
                      model={"arch": "rnn_tiny", "params": {"cell": "gru", "vocab_size": 20}})
    train_run(cfg, run_dir)
    return export_run(run_dir)
