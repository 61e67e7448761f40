"""`train.compile: true` for every task (#25): one unwrap for DDP / FSDP / torch.compile, a compiled run
that trains, evaluates and exports, and saved weights free of the compile wrapper's `_orig_mod.` prefix."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as torch_dist
from safetensors.torch import load_file
from torch import nn

from dlforge.config import ExperimentConfig, parse_config
from dlforge.evaluate.report import evaluate_run
from dlforge.experiment import check_experiment
from dlforge.export.package import export_run, load_package
from dlforge.taskapi import get_task
from dlforge.train import dist
from dlforge.train.checkpoint import list_checkpoints, load_checkpoint
from dlforge.train.run import train_run
from tests.conftest import tiny_config

# --- one unwrap ------------------------------------------------------------------------------------------


@pytest.fixture
def one_process_group() -> Iterator[dist.DistContext]:
    """A real gloo group of one process, so DDP and FSDP2 can wrap a model on the CPU."""
    torch_dist.init_process_group("gloo", store=torch_dist.HashStore(), rank=0, world_size=1)
    try:
        yield dist.DistContext(0, 0, 1, torch.device("cpu"))
    finally:
        torch_dist.destroy_process_group()


def test_unwrap_sees_through_compile_ddp_and_fsdp_in_any_order(one_process_group: dist.DistContext) -> None:
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    ddp = nn.parallel.DistributedDataParallel(net)
    wrapped = {"plain": net, "compiled": torch.compile(net), "ddp": ddp, "compiled ddp": torch.compile(ddp),
               "ddp of compiled": nn.parallel.DistributedDataParallel(torch.compile(net)),
               "compiled ddp of compiled": torch.compile(nn.parallel.DistributedDataParallel(torch.compile(net)))}
    for name, model in wrapped.items():
        assert dist.unwrap(model) is net, name
    assert [type(m).__name__ for m in dist.wrapper_chain(wrapped["compiled ddp"])] == [
        "OptimizedModule", "DistributedDataParallel", "Sequential"]
    two_workers = dist.DistContext(0, 0, 2, torch.device("cpu"))  # only says: skip the all-reduce
    with dist.no_sync(wrapped["compiled ddp"], two_workers, skip=True):
        assert not ddp.require_backward_grad_sync  # found the DDP layer under torch.compile's wrapper
    assert ddp.require_backward_grad_sync
    sharded = dist.shard_model(nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2)), one_process_group)
    assert dist.unwrap(torch.compile(sharded)) is sharded and dist.is_sharded(torch.compile(sharded))  # in place


@pytest.mark.parametrize("task", ["gan", "denoise", "seq2seq"])
def test_each_task_finds_its_model_inside_the_compile_wrapper(task: str) -> None:
    from dlforge.tasks.denoise.model import as_denoiser
    from dlforge.tasks.gan.model import as_gan
    from dlforge.tasks.seq2seq.task import plain

    find = {"gan": as_gan, "denoise": as_denoiser, "seq2seq": plain}[task]
    cfg = check_experiment(_config(task))
    bundle = get_task(task).load_data(cfg)
    net = get_task(task).create_model(cfg, bundle)
    assert find(torch.compile(net)) is net
    with pytest.raises(TypeError, match=f"task {task} expects"):
        find(torch.compile(nn.Linear(2, 2)))


# --- a compiled run of every task -----------------------------------------------------------------------

SEQ2SEQ_DATA = {"dataset": "num2words", "params": {
    "source": "digits", "target": "en", "max_number": 99, "n_samples": 96,
    "source_tokenizer": {"kind": "char", "max_length": 6}, "target_tokenizer": {"kind": "char", "max_length": 12}}}


def _config(task: str, **train: Any) -> ExperimentConfig:
    """One epoch of the smallest model of each task (compiling is what takes the time)."""
    common = {"epochs": 1, "batch_size": 64, "scheduler": {"name": "none"}, **train}
    if task == "classification":
        return tiny_config(model={"arch": "mlp_tiny"}, train=common)
    if task == "denoise":
        return tiny_config(task="denoise", model={"arch": "unet", "params": {"width": 4, "depth": 1}},
                           denoise={"noise": [{"gaussian": 0.3}]}, train=common)
    if task == "gan":
        return tiny_config(task="gan", model={"arch": "dcgan_generator_tiny"},
                           gan={"latent_dim": 8, "discriminator": {"arch": "dcgan_discriminator_tiny"},
                                "eval_samples": 64, "ema_decay": 0.9}, train={**common, "batch_size": 128})
    return parse_config({"name": "s2s", "task": "seq2seq", "data": SEQ2SEQ_DATA,
                         "model": {"arch": "rnn_attention_tiny"},
                         "train": {"progress": False, **common, "batch_size": 32},
                         "eval": {"plots": False, "decode": {"beam_size": 1, "max_length": 8}}})


def _finite(metrics: dict[str, Any], names: tuple[str, ...]) -> bool:
    return all(isinstance(metrics[n], float | int) and math.isfinite(metrics[n]) for n in names)


@pytest.mark.slow
@pytest.mark.timeout(600)
# denoise trains one model through the same single-model step as classification; that it finds its model inside
# the compile wrapper is test_each_task_finds_its_model_inside_the_compile_wrapper (suite time: ~20 s of compiling)
@pytest.mark.parametrize("task", ["classification", "seq2seq", "gan"])
def test_a_compiled_run_trains_evaluates_and_exports(task: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = check_experiment(_config(task, compile=True))
    metrics = train_run(cfg, run)
    scored = tuple(m for m in get_task(task).metrics if metrics.get(m) is not None)
    assert _finite(metrics, ("loss", *scored)), metrics
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert _finite(history[-1], tuple(f"train_{name}" for name in get_task(task).losses)), history
    weights, best, _ = load_checkpoint(list_checkpoints(run / "checkpoints")[-1])
    for state in (load_file(run / "model.safetensors"), weights, best or {}):
        assert not any("_orig_mod" in key or key.startswith("module.") for key in state)
    assert _finite(evaluate_run(run), ("loss", *scored))
    package = load_package(export_run(run))
    assert package.manifest.task == task
