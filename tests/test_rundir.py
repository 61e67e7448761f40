"""One run per run directory: retraining refuses a non-empty folder without --resume or --overwrite (item 3 of #18)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dlforge.config import dump_config
from dlforge.preprocessing import TokensPreprocessing
from dlforge.rundir import CONFIG, LOCK, RunDirError, prepare_run_dir
from dlforge.runinfo import RunInfo
from dlforge.taskapi import TASKS
from dlforge.train.checkpoint import list_checkpoints
from dlforge.train.run import train_run
from tests.conftest import tiny_config
from tests.test_errors import fails_cleanly


def snapshot(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_retraining_into_a_finished_run_is_refused_and_changes_nothing(model_package: Path) -> None:
    run_dir = model_package.parent
    before = snapshot(run_dir)
    with pytest.raises(RunDirError, match="is not empty .*--resume.*--overwrite"):
        train_run(tiny_config(), run_dir)
    message = fails_cleanly(["train", "--out", str(run_dir), "--set", "model.arch=cnn_tiny"])
    assert "continue that run with --resume, replace it with --overwrite, or pick another --out" in message
    assert snapshot(run_dir) == before


def test_overwrite_replaces_the_old_run_and_keeps_other_files(tmp_path: Path) -> None:
    cfg = tiny_config(model={"arch": "mlp_tiny"}, train={"epochs": 2})
    train_run(cfg, tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    train_run(tiny_config(model={"arch": "mlp_tiny"}, train={"epochs": 1}), tmp_path, overwrite=True)
    assert [c.name for c in list_checkpoints(tmp_path / "checkpoints")] == ["epoch-0001"]  # epoch 2 is gone
    assert len((tmp_path / "history.jsonl").read_text().splitlines()) == 1
    assert json.loads((tmp_path / "metrics.json").read_text())["epochs"] == 1
    assert (tmp_path / "notes.txt").read_text() == "mine"
    # --resume after --overwrite continues the new run, not the old one
    metrics = train_run(tiny_config(model={"arch": "mlp_tiny"}, train={"epochs": 2}), tmp_path, resume=True)
    assert metrics["epochs"] == 2 and len((tmp_path / "history.jsonl").read_text().splitlines()) == 2


def test_resume_with_another_model_is_refused_naming_the_key(model_package: Path) -> None:
    run_dir = model_package.parent  # trained with cnn_tiny
    before = snapshot(run_dir)
    message = fails_cleanly(["train", "--out", str(run_dir), "--resume", "--set", "model.arch=cnn_tiny",
                             "--set", "model.params.channels=[8]"])
    assert "--resume:" in message and "model.params.channels: unset in the run, [8] now" in message
    assert "--overwrite" in message
    assert "--resume continues the run" in fails_cleanly(["train", "--out", str(run_dir), "--resume", "--overwrite"])
    assert snapshot(run_dir) == before


TASK_CONFIGS = {
    "classification": {},
    "gan": {"task": "gan", "model": {"arch": "dcgan_generator_tiny"},
            "gan": {"discriminator": {"arch": "dcgan_discriminator_tiny"}}},
    "denoise": {"task": "denoise", "model": {"arch": "unet_tiny"}},
    "seq2seq": {"task": "seq2seq", "model": {"arch": "rnn_attention_tiny"},
                "data": {"dataset": "num2words", "params": {"source": "digits", "target": "en", "max_number": 99,
                                                            "n_samples": 60}}},
}


@pytest.mark.parametrize("task", sorted(n for n in TASKS.names() if TASKS.get(n).module.startswith("dlforge.tasks.")))
def test_every_task_refuses_a_non_empty_run_dir_before_loading_data(tmp_path: Path, task: str) -> None:
    (tmp_path / "history.jsonl").write_text("{}\n")
    with pytest.raises(RunDirError, match="is not empty"):
        train_run(tiny_config(**TASK_CONFIGS[task]), tmp_path)
    # nothing of the run is written; the training lock's (empty) file is the folder's, not the run's
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != LOCK) == ["history.jsonl"]


def test_overwrite_removes_the_old_runs_artifacts(tmp_path: Path) -> None:
    cfg = tiny_config()
    (tmp_path / CONFIG).write_text(dump_config(cfg))
    RunInfo([4], ["a", "b"], True, TokensPreprocessing(vocab_size=9), "text_csv", ["tokenizer.json"]).save(tmp_path)
    for name in ("tokenizer.json", "mine.txt"):
        (tmp_path / name).write_text("{}")
    prepare_run_dir(tmp_path, cfg, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def test_resume_refuses_another_discriminator(tmp_path: Path) -> None:
    cfg = tiny_config(**TASK_CONFIGS["gan"])
    (tmp_path / CONFIG).write_text(dump_config(cfg))
    prepare_run_dir(tmp_path, cfg, resume=True)  # the same recipe resumes
    changed = tiny_config(**{**TASK_CONFIGS["gan"], "gan": {"discriminator": {"arch": "dcgan_discriminator"}}})
    with pytest.raises(RunDirError, match='gan.discriminator.arch: "dcgan_discriminator_tiny" in the run'):
        prepare_run_dir(tmp_path, changed, resume=True)
    knobs = tiny_config(**{**TASK_CONFIGS["gan"], "train": {"epochs": 9}})
    prepare_run_dir(tmp_path, knobs, resume=True)  # training knobs may change


@pytest.mark.slow
def test_a_run_being_trained_is_locked_and_ctrl_c_says_how_to_go_on(tmp_path: Path) -> None:
    """#30: a second `dlforge train` into a folder being trained — even `--resume` — is one error line naming the
    holder's pid; Ctrl-C stops with the epoch reached and the command that continues (exit 130)."""
    import signal
    import subprocess
    import sys
    import time

    import yaml
    from typer.testing import CliRunner

    from dlforge.cli import app

    config = tmp_path / "experiment.yaml"
    config.write_text(yaml.safe_dump({"name": "locked", "data": {"dataset": "digits"}, "model": {"arch": "mlp_tiny"},
                                      "train": {"epochs": 500, "batch_size": 64, "progress": False},
                                      "eval": {"plots": False}}))
    run = tmp_path / "run"
    src = str(Path(__file__).resolve().parent.parent / "src")
    proc = subprocess.Popen([sys.executable, "-m", "dlforge", "train", str(config), "--out", str(run)],
                            env={**os.environ, "PYTHONPATH": src}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not list((run / "checkpoints").glob("epoch-*/state.pt")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.2)
        second = CliRunner().invoke(app, ["train", str(config), "--out", str(run), "--resume"])
        assert second.exit_code == 2, second.output
        assert f"is being trained by another process (pid {proc.pid})" in second.output
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, out.decode()
    text = out.decode()
    assert "stopped after epoch " in text and f"--out {run} --resume" in text and "Traceback" not in text, text
    assert not (run / ".dlforge.lock.pid").exists()  # released: the next --resume may go on
