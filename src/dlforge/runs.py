"""`dlforge runs`: the run directories under a folder, one row each, to compare runs without a tracking server.

Reads only what every run directory holds (config.yaml, history.jsonl, metrics.json, checkpoints/, the
training lock's holder), so it is cheap on a folder of hundreds of runs and never imports torch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dlforge.rundir import CHECKPOINTS, CONFIG, HISTORY, LOCK_HOLDER, METRICS, PACKAGE, read_history

MAX_DEPTH = 3  # runs/<name>, runs/<study>/<trial>, …


@dataclass
class RunRow:
    """One run directory as `dlforge runs` shows it."""

    path: Path
    name: str
    task: str
    dataset: str
    status: str  # finished | training (pid N) | stopped | failed to read
    epochs: str  # done/asked
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    packaged: bool = False


def find_runs(root: Path) -> list[Path]:
    """Folders under `root` (itself included) that hold a run's config.yaml, up to MAX_DEPTH levels down."""
    found, frontier = [], [root]
    for _ in range(MAX_DEPTH + 1):
        found += [d for d in frontier if (d / CONFIG).is_file()]
        frontier = [c for d in frontier if not (d / CONFIG).is_file() and d.is_dir()
                    for c in sorted(d.iterdir()) if c.is_dir() and not c.name.startswith(".")]
    return sorted(found)


def _holder(run_dir: Path) -> int | None:
    """The pid training into `run_dir` now, if that process is alive."""
    try:
        pid = int((run_dir / LOCK_HOLDER).read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def read_run(run_dir: Path) -> RunRow:
    try:
        raw: dict[str, Any] = yaml.safe_load((run_dir / CONFIG).read_text()) or {}
        history = read_history(run_dir) if (run_dir / HISTORY).is_file() else []
        metrics = json.loads((run_dir / METRICS).read_text()) if (run_dir / METRICS).is_file() else {}
    except (OSError, ValueError, yaml.YAMLError) as exc:
        return RunRow(run_dir, run_dir.name, "?", "?", f"failed to read ({type(exc).__name__})", "?", 0.0)
    pid = _holder(run_dir)
    if pid is not None:
        status = f"training (pid {pid})"
    elif metrics:
        status = "finished"
    else:
        status = "stopped" if (run_dir / CHECKPOINTS).is_dir() else "not started"
    asked = (raw.get("train") or {}).get("epochs", "?")
    return RunRow(run_dir, str(raw.get("name", run_dir.name)), str(raw.get("task", "?")),
                  str((raw.get("data") or {}).get("dataset", "?")), status, f"{len(history)}/{asked}",
                  sum(float(row.get("time_s", 0.0)) for row in history),
                  {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)},
                  (run_dir / PACKAGE / "manifest.json").is_file())
