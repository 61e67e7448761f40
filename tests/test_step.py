"""Mixed precision, gradient accumulation and torch.compile, single process on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dlforge.train.checkpoint import list_checkpoints, load_checkpoint
from dlforge.train.precision import autocast, grad_scaler
from dlforge.train.run import train_run
from dlforge.train.trainer import steps_optimizer, updates_per_epoch
from tests.conftest import tiny_config

MLP = {"arch": "mlp_tiny", "params": {"dropout": 0.0}}


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "model.safetensors")


def close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=atol, rtol=0) for k in a)


def test_autocast_lowers_precision_and_fp16_gets_a_grad_scaler() -> None:
    cpu = torch.device("cpu")
    with autocast("bf16", cpu):
        assert torch.nn.Linear(4, 4)(torch.randn(2, 4)).dtype == torch.bfloat16
    with autocast("fp16", cpu):
        assert torch.nn.Linear(4, 4)(torch.randn(2, 4)).dtype == torch.float16
    assert grad_scaler("fp16", cpu) is not None
    assert grad_scaler("bf16", cpu) is None and grad_scaler("fp32", cpu) is None


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_on_cpu(tmp_path: Path, precision: str) -> None:
    cfg = tiny_config(model=MLP, train={"epochs": 1, "precision": precision})
    metrics = train_run(cfg, tmp_path / precision)
    train_run(tiny_config(model=MLP, train={"epochs": 1}), tmp_path / "fp32")
    assert metrics["accuracy"] > 0.5
    assert not close(weights(tmp_path / precision), weights(tmp_path / "fp32"), atol=1e-6)  # autocast ran
    _, _, state = load_checkpoint(list_checkpoints(tmp_path / precision / "checkpoints")[-1])
    assert ("scaler" in state) == (precision == "fp16")


def test_accumulating_two_micro_batches_equals_one_batch_twice_the_size(tmp_path: Path) -> None:
    # 1348 training samples = 337 × 4: batch 4 and micro-batches of 2 group the same samples
    common = {"epochs": 1, "optimizer": {"name": "sgd", "lr": 0.01}, "scheduler": {"name": "none"}}
    data = {"dataset": "digits", "val_fraction": 0.0995}
    train_run(tiny_config(data=data, model=MLP, train={**common, "batch_size": 4}), tmp_path / "big")
    train_run(tiny_config(data=data, model=MLP, train={**common, "batch_size": 2, "accumulate": 2}),
              tmp_path / "acc")
    assert close(weights(tmp_path / "big"), weights(tmp_path / "acc"), atol=1e-5)


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path: Path) -> None:
    train_run(tiny_config(model=MLP, train={"epochs": 1, "compile": True}), tmp_path / "compiled")
    train_run(tiny_config(model=MLP, train={"epochs": 1}), tmp_path / "eager")
    compiled = weights(tmp_path / "compiled")
    assert not any("_orig_mod" in k for k in compiled)  # saved without the compile wrapper's prefix
    assert close(compiled, weights(tmp_path / "eager"), atol=1e-4)


@pytest.mark.parametrize(("batches", "accumulate", "updates"), [(7, 1, 7), (7, 3, 3), (6, 3, 2), (2, 4, 1), (1, 1, 1)])
def test_one_rule_says_when_accumulation_steps_the_optimizer(batches: int, accumulate: int, updates: int) -> None:
    steps = [i for i in range(1, batches + 1) if steps_optimizer(i, batches, accumulate)]
    assert updates_per_epoch(batches, accumulate) == len(steps) == updates
    assert steps[-1] == batches  # a short tail still updates


def test_the_schedule_spans_exactly_the_updates_training_takes(tmp_path: Path) -> None:
    """#18: steps per epoch were computed twice (scheduler length, epoch loop); one rule now feeds both."""
    cfg = tiny_config(model=MLP, train={"epochs": 2, "batch_size": 128, "accumulate": 3,
                                         "scheduler": {"name": "cosine"}})
    train_run(cfg, tmp_path / "run")
    _, _, state = load_checkpoint(list_checkpoints(tmp_path / "run" / "checkpoints")[-1])
    assert state["loop"]["step"] == state["scheduler"]["last_epoch"]  # every update advanced the schedule once
    assert state["scheduler"]["_last_lr"][0] == pytest.approx(0.0, abs=1e-9)  # and the cosine ended at its floor
