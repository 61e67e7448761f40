"""A run killed inside an epoch resumes from its mid-epoch checkpoint to bitwise the weights of a run
that was never stopped: image folders read lazily by loader workers, with 1 and with 2 processes.

The kill is real (SIGKILL of every training process, right after the checkpoint of a chosen step is
written: tests/worker_hooks), so nothing depends on timing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from dlforge.train.checkpoint import list_checkpoints
from tests.test_dist import finish, launch, write_config

pytestmark = [pytest.mark.slow]


def image_folder(root: Path, per_class: int = 40) -> Path:
    """Three classes of 12x12 PNGs told apart by colour, with noise."""
    rng = np.random.default_rng(0)
    for name, rgb in (("red", (200, 40, 40)), ("green", (40, 200, 40)), ("blue", (40, 40, 200))):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(np.array(rgb) + rng.normal(0, 40, (12, 12, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def experiment(data: Path) -> dict[str, Any]:
    # 84 training images, batch 8: 11 optimizer steps an epoch; a checkpoint every 3 steps
    return {
        "name": "midepoch",
        "data": {"dataset": "image_folder", "params": {"path": str(data), "image_size": [12, 12]},
                 "workers": 2},
        "model": {"arch": "cnn_small", "params": {"channels": [8], "hidden": 16, "dropout": 0.3}},
        "augment": [{"hflip": 0.5}, {"gaussian_noise": {"std": 0.05}}],  # draws from the RNG every batch
        "train": {"epochs": 2, "batch_size": 8, "progress": False, "keep_best": False, "checkpoint_every_steps": 3,
                  "optimizer": {"lr": 0.01}},
        "eval": {"plots": False},
    }


def test_sigkill_inside_an_epoch_then_resume_is_bitwise_exact(tmp_path: Path) -> None:
    # one process here; two (each rank's loader position, RNG and sums) in tests/test_shards.py, same experiment
    assert_killed_then_resumed_equals_straight(tmp_path, experiment(image_folder(tmp_path / "images")), 1)


def assert_killed_then_resumed_equals_straight(tmp_path: Path, raw: dict[str, Any], nproc: int) -> None:
    """A run of `raw` SIGKILLed 4 steps into epoch 2, then resumed, ends bitwise where a straight run ends."""
    config = write_config(tmp_path, raw)
    procs = ["--nproc", "2"] if nproc == 2 else []
    code, stderr = finish(launch(config, tmp_path / "straight", *procs))
    assert code == 0, stderr

    code, stderr = finish(launch(config, tmp_path / "killed", *procs, DLFORGE_TEST_KILL_AT_STEP="15"))
    assert code != 0
    assert not (tmp_path / "killed/model.safetensors").exists()
    latest = list_checkpoints(tmp_path / "killed/checkpoints")[-1]
    assert latest.name == "epoch-0001-step-000000015"  # 4 steps into epoch 2: the loader had a position

    code, stderr = finish(launch(config, tmp_path / "killed", *procs, "--resume"))
    assert code == 0, stderr
    straight = (tmp_path / "straight/model.safetensors").read_bytes()
    assert (tmp_path / "killed/model.safetensors").read_bytes() == straight
    assert learning(tmp_path / "killed") == learning(tmp_path / "straight")  # the resumed epoch's loss too


def learning(run: Path) -> list[dict[str, Any]]:
    """history.jsonl without the timings."""
    rows = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in ("samples_per_s", "time_s")} for row in rows]
