"""`dlforge runs`: a table of the run directories under a folder, read from the files every run holds."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from typer.testing import CliRunner

from dlforge.cli import app
from dlforge.config import dump_config
from dlforge.rundir import LOCK_HOLDER
from tests.conftest import tiny_config
from tests.test_errors import fails_cleanly

runner = CliRunner()


def _folder(model_package: Path, root: Path) -> Path:
    """A finished run (the session's tiny digits run), a better copy of it, a stopped one, one training now
    (this process holds its lock) and one whose config is not YAML."""
    finished = model_package.parent
    shutil.copytree(finished, root / "digits")
    better = root / "sweep" / "lr-0.1"
    shutil.copytree(finished, better)
    metrics = json.loads((better / "metrics.json").read_text())
    (better / "metrics.json").write_text(json.dumps({**metrics, "accuracy": 0.999}))
    for name in ("stopped", "training"):
        (root / name / "checkpoints").mkdir(parents=True)
        (root / name / "config.yaml").write_text(dump_config(tiny_config(name=name)))
    (root / "training" / LOCK_HOLDER).write_text(f"{os.getpid()}\n")
    (root / "broken").mkdir()
    (root / "broken" / "config.yaml").write_text("name: [unclosed\n")
    return root


def test_runs_lists_every_run_with_its_status_and_sorts_by_a_metric(model_package: Path, tmp_path: Path) -> None:
    root = _folder(model_package, tmp_path / "runs")
    rows = json.loads(runner.invoke(app, ["runs", str(root), "--json", "--sort", "accuracy"]).output)
    assert [Path(r["path"]).relative_to(root).as_posix() for r in rows][:2] == ["sweep/lr-0.1", "digits"]
    status = {Path(r["path"]).name: r["status"] for r in rows}
    assert status["digits"] == "finished" and status["stopped"] == "stopped"
    assert status["training"] == f"training (pid {os.getpid()})" and status["broken"].startswith("failed to read")
    first = rows[0]
    assert first["task"] == "classification" and first["dataset"] == "digits" and first["packaged"] is True
    assert first["epochs"] == "1/1" and first["metrics"]["accuracy"] == 0.999
    table = CliRunner(env={"COLUMNS": "220"}).invoke(app, ["runs", str(root)])
    assert table.exit_code == 0 and "5 runs under" in table.output and "accuracy 0.999" in table.output


def test_runs_refuses_what_it_cannot_list(model_package: Path, tmp_path: Path) -> None:
    assert "no such folder" in fails_cleanly(["runs", str(tmp_path / "nowhere")])
    root = _folder(model_package, tmp_path / "runs")
    assert "no run has 'bleu' (use name, time or one of: accuracy" in fails_cleanly(["runs", str(root), "--sort",
                                                                                     "bleu"])
