"""Distributed training on CPU with gloo: `dlforge train --nproc 2` through torchrun's API.

One uninterrupted 2-worker run (module fixture) is the reference for three tests: it must match a
single worker with the same global batch, its metrics.json must match a one-process evaluation, and
a run whose worker is SIGKILLed (then restarted by torchrun) must end with the same weights.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from dlforge.evaluate.report import evaluate_run
from dlforge.train.checkpoint import list_checkpoints

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
SRC = Path(__file__).resolve().parents[1] / "src"
WORKER_HOOKS = Path(__file__).resolve().parent / "worker_hooks"

# 1348 training samples (val_fraction 0.0995): even, and 1348 % 8 is even, so the sampler never pads and
# both workers' last batches are equal halves; no batchnorm, no dropout, so 1 and 2 workers compute the
# same gradients. Batch 8 keeps each epoch ~2 s: long enough to kill a worker mid-training.
EXPERIMENT: dict[str, Any] = {
    "name": "dist", "data": {"dataset": "digits", "val_fraction": 0.0995},
    "model": {"arch": "cnn_small", "params": {"channels": [8], "hidden": 32, "dropout": 0.0, "batchnorm": False}},
    "train": {"epochs": 4, "batch_size": 8, "progress": False, "keep_best": False, "optimizer": {"lr": 0.01},
              "scheduler": {"name": "cosine", "warmup_epochs": 1}},
    "eval": {"plots": False},
}


def write_config(folder: Path, raw: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "experiment.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def launch(config: Path, out: Path, *extra: str, **env: str) -> subprocess.Popen[bytes]:
    """`python -m dlforge train CONFIG --out OUT ...` with this worktree's code, one thread per worker."""
    path = os.pathsep.join([str(SRC), str(WORKER_HOOKS)])  # worker_hooks/sitecustomize.py: the fault injection
    full_env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "DLFORGE_DIST_TIMEOUT": "60", **env}
    return subprocess.Popen([sys.executable, "-m", "dlforge", "train", str(config), "--out", str(out), *extra],
                            env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen[bytes], timeout: float = 180) -> tuple[int, str]:
    """Wait for the job; on timeout SIGTERM the launcher first, so torchrun stops its workers (each lives
    in its own session, out of reach of a process-group kill), then SIGKILL whatever is left."""
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        raise
    return proc.returncode, stderr.decode()


def weights_close(a: Path, b: Path, atol: float = 1e-5) -> bool:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return wa.keys() == wb.keys() and all(torch.allclose(wa[k], wb[k], atol=atol, rtol=0) for k in wa)


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    code, stderr = finish(launch(write_config(root, EXPERIMENT), root / "run", "--nproc", "2",
                                 "--set", "train.loggers=[csv, tensorboard]"))
    assert code == 0, stderr
    return root / "run"


def test_two_workers_log_once(two_workers: Path) -> None:
    """Only the main worker logs: each (step, metric) once in metrics.csv, one TensorBoard event file."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with (two_workers / "metrics.csv").open(newline="") as f:
        rows = [(int(r["step"]), r["metric"]) for r in csv.DictReader(f)]
    assert len(rows) == len(set(rows))
    assert [step for step, metric in rows if metric == "step/train_loss"] == list(range(10, 677, 10))
    assert [step for step, metric in rows if metric == "epoch/val_accuracy"] == [169, 338, 507, 676]
    events = list((two_workers / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    scalars = EventAccumulator(str(events[0])).Reload().Scalars("step/train_loss")
    assert [e.step for e in scalars] == list(range(10, 677, 10))


def test_two_workers_match_one_worker_with_the_same_global_batch(two_workers: Path, tmp_path: Path) -> None:
    code, stderr = finish(launch(write_config(tmp_path, EXPERIMENT), tmp_path / "one"))  # a plain process
    assert code == 0, stderr
    assert weights_close(two_workers, tmp_path / "one", atol=1e-5)
    history = [json.loads(line) for line in (two_workers / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [169, 338, 507, 676]  # global batch 8 = 2 workers × 4


def test_distributed_metrics_equal_a_single_process_evaluation(two_workers: Path) -> None:
    saved = json.loads((two_workers / "metrics.json").read_text())
    again = evaluate_run(two_workers)
    assert saved["samples"] == again["samples"] == 270  # the whole test split, nothing counted twice
    assert saved["confusion_matrix"] == again["confusion_matrix"]
    for key in ("accuracy", "precision", "recall", "f1", "loss"):
        assert saved[key] == pytest.approx(again[key], abs=1e-6), key
    for label, row in saved["per_class"].items():
        assert row == pytest.approx(again["per_class"][label], abs=1e-6), label


@pytest.mark.parametrize("strategy", ["fsdp"])  # DDP's mid-epoch kill and resume: tests/test_shards.py
def test_a_killed_worker_is_restarted_and_the_run_resumes_to_the_same_weights(two_workers: Path, tmp_path: Path,
                                                                            strategy: str) -> None:
    out, pids = tmp_path / "run", tmp_path / "pids"
    job = launch(write_config(tmp_path, EXPERIMENT), out, "--nproc", "2", "--max-restarts", "2",
                 "--set", f"train.strategy={strategy}", DLFORGE_TEST_PID_DIR=str(pids))
    deadline = time.monotonic() + 120
    while not list_checkpoints(out / "checkpoints"):  # wait for epoch 1's checkpoint
        assert job.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    victim = int((pids / "rank-1.pid").read_text())
    os.kill(victim, signal.SIGKILL)
    assert not (out / "model.safetensors").exists(), "the run finished before the kill"
    code, stderr = finish(job, timeout=150)
    assert code == 0, stderr
    assert int((pids / "rank-1.pid").read_text()) != victim  # torchrun started a new group
    assert weights_close(two_workers, out, atol=1e-6 if strategy == "ddp" else 1e-5)  # FSDP: other reduce order
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]


def test_a_failing_rank_ends_the_job_with_its_error_not_a_hang(tmp_path: Path) -> None:
    raw = {**EXPERIMENT, "model": {"arch": "mlp_tiny"}, "train": {**EXPERIMENT["train"], "epochs": 1}}
    started = time.monotonic()
    code, stderr = finish(launch(write_config(tmp_path, raw), tmp_path / "run", "--nproc", "2",
                                 DLFORGE_TEST_FAIL_RANK="1"), timeout=120)
    assert code == 1 and time.monotonic() - started < 90
    assert "worker rank 1 failed" in stderr and "injected failure on rank 1" in stderr, stderr[-2000:]


def test_fsdp_with_accumulation_matches_one_worker(tmp_path: Path) -> None:
    raw = {**EXPERIMENT, "model": {"arch": "mlp_tiny", "params": {"dropout": 0.0}},
           "train": {**EXPERIMENT["train"], "epochs": 1, "batch_size": 8, "accumulate": 2}}
    code, stderr = finish(launch(write_config(tmp_path, raw), tmp_path / "fsdp", "--nproc", "2",
                                 "--set", "train.strategy=fsdp"))
    assert code == 0, stderr
    code, stderr = finish(launch(tmp_path / "experiment.yaml", tmp_path / "one"))
    assert code == 0, stderr
    assert weights_close(tmp_path / "fsdp", tmp_path / "one", atol=1e-5)  # full state dict written by rank 0
    assert json.loads((tmp_path / "fsdp/metrics.json").read_text())["samples"] == 270


def test_sync_batchnorm_on_cpu_is_refused_before_any_worker_starts(tmp_path: Path) -> None:
    """torch's SyncBatchNorm is CUDA-only: the launcher says so in config terms instead of a DDP traceback."""
    code, stderr = finish(launch(write_config(tmp_path, EXPERIMENT), tmp_path / "run", "--nproc", "2",
                                 "--set", "train.sync_batchnorm=true"), timeout=60)
    assert code == 2, stderr
    assert "train.sync_batchnorm" in stderr and "CUDA devices only" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_unfreezing_under_ddp_matches_one_worker(tmp_path: Path) -> None:
    """Layers frozen for epoch 1 join DDP's gradient all-reduce from epoch 2 (the wrapper is rebuilt)."""
    raw = {**EXPERIMENT, "train": {**EXPERIMENT["train"], "epochs": 2, "freeze": [r"^body\.0\."],
                                   "unfreeze_at_epoch": 2}}
    code, stderr = finish(launch(write_config(tmp_path, raw), tmp_path / "ddp", "--nproc", "2"))
    assert code == 0, stderr
    code, stderr = finish(launch(tmp_path / "experiment.yaml", tmp_path / "one"))
    assert code == 0, stderr
    assert weights_close(tmp_path / "ddp", tmp_path / "one", atol=1e-5)


def test_a_worker_error_file_is_whole_json_that_torchrun_parses(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent reads a failed worker's error file; a half-written one made it end the job instead of restarting."""
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

    from dlforge.train.dist import record_errors

    error_file = tmp_path / "error.json"
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(error_file))

    @record_errors
    def worker() -> None:
        raise RuntimeError("gloo: connection closed by peer")

    with pytest.raises(RuntimeError):
        worker()
    failure = ProcessFailure(local_rank=0, pid=1, exitcode=1, error_file=str(error_file))
    assert failure.message["message"] == "RuntimeError: gloo: connection closed by peer"
    assert [p.name for p in tmp_path.iterdir()] == ["error.json"]  # no partial file left beside it
