import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from dlforge.train.checkpoint import list_checkpoints, load_checkpoint
from dlforge.train.run import train_run
from tests.conftest import tiny_config


def test_training_writes_the_run_directory_contract(tmp_path: Path) -> None:
    cfg = tiny_config(eval={"plots": True})
    metrics = train_run(cfg, tmp_path)
    for name in ("config.yaml", "run.json", "model.safetensors", "history.jsonl", "metrics.json",
                 "report/confusion_matrix.png", "report/learning_curves.png"):
        assert (tmp_path / name).is_file(), name
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert {"accuracy", "precision", "recall", "f1", "per_class", "confusion_matrix"} <= set(saved)
    assert saved["accuracy"] == metrics["accuracy"] and saved["accuracy"] > 0.5
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2] and history[1]["train_loss"] < history[0]["train_loss"]
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["train"]["optimizer"]["name"] == "adamw"
    _weights, _, state = load_checkpoint(list_checkpoints(tmp_path / "checkpoints")[-1])
    assert state["epoch"] == 2 and "optimizer" in state and state["config"]["name"] == "tiny"


def test_early_stopping_stops_all_workers_when_nothing_improves(tmp_path: Path) -> None:
    cfg = tiny_config(train={"epochs": 6, "optimizer": {"lr": 1e-9}, "early_stopping": {"patience": 1},
                             "monitor": "val_loss", "scheduler": {"name": "none"}})
    metrics = train_run(cfg, tmp_path)
    assert metrics["stopped_early"] and metrics["epochs"] < 6


def test_training_is_deterministic_on_cpu(tmp_path: Path) -> None:
    cfg = tiny_config(model={"arch": "mlp_tiny"}, train={"epochs": 1})
    train_run(cfg, tmp_path / "a")
    train_run(cfg, tmp_path / "b")
    a, b = load_file(tmp_path / "a/model.safetensors"), load_file(tmp_path / "b/model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def _experiment(tmp_path: Path, augment: bool) -> Path:
    cfg = {"name": "resume", "data": {"dataset": "digits"},
           "model": {"arch": "cnn_small", "params": {"channels": [8], "hidden": 32, "dropout": 0.3}},
           "train": {"epochs": 8, "batch_size": 32, "progress": False, "keep_best": False,
                     "scheduler": {"name": "cosine", "warmup_epochs": 1}},
           "eval": {"plots": False}}
    if augment:  # augmentation draws from the RNG every batch: resume must restore it exactly
        cfg["augment"] = [{"rotate": 10}, {"gaussian_noise": {"std": 0.05}}, {"mixup": {"alpha": 0.2}}]
    path = tmp_path / "resume.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _train(config: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "dlforge", "train", str(config), "--out", str(out), *extra],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_resume_after_sigkill_is_bitwise_exact(tmp_path: Path) -> None:
    # with augmentation: its RNG draws must resume too (a run without it restores strictly less state)
    delay, config = 0.05, _experiment(tmp_path, True)
    assert _train(config, tmp_path / "straight").wait(timeout=240) == 0
    victim = _train(config, tmp_path / "killed")
    deadline = time.monotonic() + 120
    while not list_checkpoints(tmp_path / "killed/checkpoints"):
        assert victim.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    time.sleep(delay)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (tmp_path / "killed/model.safetensors").exists(), "run finished before the kill"
    resumed = _train(config, tmp_path / "killed", "--resume")
    assert resumed.wait(timeout=240) == 0, resumed.stderr.read().decode() if resumed.stderr else ""
    straight = (tmp_path / "straight/model.safetensors").read_bytes()
    assert (tmp_path / "killed/model.safetensors").read_bytes() == straight
    history = (tmp_path / "killed/history.jsonl").read_text().splitlines()
    assert len(history) == 8


def test_train_threads_sets_the_workers_thread_count(tmp_path: Path) -> None:
    before = torch.get_num_threads()
    try:
        train_run(tiny_config(model={"arch": "mlp_tiny"}, train={"epochs": 1, "threads": 2}), tmp_path / "run")
        assert torch.get_num_threads() == 2 != before  # the suite itself runs with one thread (conftest)
    finally:
        torch.set_num_threads(before)
