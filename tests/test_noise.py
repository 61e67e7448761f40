"""No noise around the output (item 7 of #18): no warnings from export, plain progress lines without a
terminal, help text shown as written, presets listed with their own defaults, errors that name folders."""

from __future__ import annotations

import io
import re
import tomllib
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console
from typer.main import get_command
from typer.testing import CliRunner

from dlforge.cli import app
from dlforge.config import DataConfig
from dlforge.data.datasets import DataError
from dlforge.data.splits import load_data
from dlforge.export.package import export_run
from dlforge.train.progress import EpochProgress
from dlforge.train.run import train_run
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_exporting_an_rnn_raises_no_warning(tmp_path: Path) -> None:
    data = {"dataset": "synthetic", "params": {"kind": "tokens", "shape": [12], "vocab_size": 16, "n_samples": 64}}
    train_run(tiny_config(data=data, model={"arch": "rnn_tiny", "params": {"vocab_size": 16}},
                          train={"epochs": 1, "batch_size": 16}), tmp_path / "run")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # the suite ignores FutureWarnings; a user's terminal shows them
        export_run(tmp_path / "run")
    assert [f"{w.category.__name__}: {w.message}" for w in caught] == []


def test_progress_without_a_terminal_is_one_plain_line_per_epoch() -> None:
    out = io.StringIO()
    with EpochProgress(True, 2, Console(file=out)) as bar:
        for epoch in (1, 2):
            bar.start(epoch, 20)
            for _ in range(20):
                bar.advance()
            bar.end({"train_loss": 0.5 / epoch, "val_accuracy": 0.9})
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2  train_loss 0.5  val_accuracy 0.9  (")
    assert "━" not in out.getvalue()


def test_training_under_capture_prints_epoch_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train_run(tiny_config(model={"arch": "mlp_tiny"}, train={"epochs": 2, "progress": True}), tmp_path)
    err = capsys.readouterr().err
    assert re.search(r"^epoch 1/2  train_loss \S+  val_loss \S+  val_accuracy \S+  \(\d+\.\d s\)$", err, re.M), err
    assert "━" not in err


def test_help_shows_angle_bracket_placeholders() -> None:
    """Every `<placeholder>` in an option's help survives the markdown rendering of --help."""
    for name, command in get_command(app).commands.items():  # type: ignore[attr-defined]
        wanted = [m for p in command.params for m in re.findall(r"\S*<\w+>\S*", getattr(p, "help", None) or "")]
        if wanted:
            shown = runner.invoke(app, [name, "--help"], env={"COLUMNS": "400"}).output
            for text in wanted:
                assert text.strip("`()") in shown, (name, text)


def test_tiny_presets_are_listed_with_their_own_defaults() -> None:
    shown = runner.invoke(app, ["models"], env={"COLUMNS": "400"}).output
    rows = {line.split("│")[1].strip(): line for line in shown.splitlines() if line.count("│") >= 3}
    assert "channels=[4], hidden=16" in rows["cnn_tiny"] and "channels=[32, 64]" in rows["cnn_small"]
    assert "width=4" in rows["resnet18_tiny"] and "hidden=8" in rows["rnn_tiny"]
    assert "dim=16" in rows["text_transformer_tiny"] and "dim=128" in rows["text_transformer"]
    assert "width=4" in rows["unet_tiny"] and "depth=1" in rows["unet_tiny"]


def test_a_split_error_names_the_class_folder(tmp_path: Path) -> None:
    for name, count in (("cats", 1), ("dogs", 12)):
        (tmp_path / name).mkdir()
        for i in range(count):
            Image.fromarray(np.full((8, 8), 40 * i % 255, np.uint8)).save(tmp_path / name / f"{i}.png")
    with pytest.raises(DataError, match="class 'cats' has 1 sample"):
        load_data(DataConfig(dataset="image_folder", params={"path": str(tmp_path), "image_size": [8, 8]}), 0)


def test_the_license_is_an_spdx_expression() -> None:
    """setuptools >= 77 warns (three times per install) about a `license = {text = …}` table."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"
    assert any(req.startswith("setuptools>=77") for req in project["build-system"]["requires"])
