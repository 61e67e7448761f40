"""The run directory contract (see README): what each file is, and rebuilding the model from it.

Evaluate and export rebuild everything from a run directory alone: `config.yaml` (the resolved
spec), `run.json` (data facts: input shape, labels, preprocessing, artifacts), the artifacts
themselves (e.g. tokenizer.json) and `model.safetensors`. A model package carries the same files,
so the torch runtime rebuilds with the same function (`rebuild_model`, which asks the task).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from torch import nn

from dlforge.config import ExperimentConfig, load_config
from dlforge.errors import UserError
from dlforge.runinfo import RUN_INFO, RunInfo
from dlforge.taskapi import get_task
from dlforge.train.tracking import TRACKING_ENTRIES

CONFIG, WEIGHTS = "config.yaml", "model.safetensors"
METRICS, HISTORY = "metrics.json", "history.jsonl"
CHECKPOINTS, REPORT, PACKAGE = "checkpoints", "report", "package"
PRETRAINED_REPORT = "pretrained.json"  # what model.pretrained loaded, replaced and left out
RUN_ENTRIES = (CONFIG, RUN_INFO, WEIGHTS, METRICS, HISTORY, CHECKPOINTS, REPORT, PACKAGE,
               PRETRAINED_REPORT, *TRACKING_ENTRIES)  # what --overwrite removes


LOCK, LOCK_HOLDER = ".dlforge.lock", ".dlforge.lock.pid"  # held while a process trains into the folder


class RunDirError(UserError, FileNotFoundError):
    """A run directory that is missing files, or that a command must not write into."""


@contextlib.contextmanager
def training_lock(run_dir: Path) -> Iterator[None]:
    """Hold `run_dir` for one training process (an OS file lock, released even when the process is killed):
    a second `dlforge train` into it — a `--resume` included — gets one error line naming the holder."""
    from filelock import FileLock, Timeout

    run_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(run_dir / LOCK, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunDirError(f"{run_dir} is being trained by another process ({_holder(run_dir)}); wait for it to "
                          "finish or stop it, then continue with --resume") from None
    try:
        (run_dir / LOCK_HOLDER).write_text(f"{os.getpid()}\n")  # filelock truncates the lock file itself
        yield
    finally:
        (run_dir / LOCK_HOLDER).unlink(missing_ok=True)
        lock.release()


def _holder(run_dir: Path) -> str:
    try:
        return f"pid {int((run_dir / LOCK_HOLDER).read_text())}"
    except (OSError, ValueError):
        return "pid unknown"


def check_not_training(run_dir: Path) -> None:
    """Refuse now, before starting workers, what the main worker's `training_lock` would refuse."""
    if (run_dir / LOCK).is_file():
        with training_lock(run_dir):
            pass


def require(run_dir: Path, *names: str) -> None:
    missing = [n for n in names if not (run_dir / n).is_file()]
    if missing:
        raise RunDirError(f"{run_dir}: not a finished run directory (missing {', '.join(missing)}); "
                          f"train first: dlforge train CONFIG --out {run_dir}")


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """The per-epoch rows of history.jsonl ([] before the first epoch ends)."""
    path = run_dir / HISTORY
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def load_run(run_dir: Path) -> tuple[ExperimentConfig, RunInfo, nn.Module]:
    """The config, data facts and the trained model (CPU, eval mode) of a run directory."""
    require(run_dir, CONFIG, RUN_INFO, WEIGHTS)
    cfg = load_config(run_dir / CONFIG)
    info = RunInfo.load(run_dir)
    require(run_dir, *info.artifacts)
    return cfg, info, rebuild_model(cfg, info, run_dir / WEIGHTS)


def rebuild_model(cfg: ExperimentConfig, info: RunInfo, weights: Path) -> nn.Module:
    """The one recipe for a trained network (CPU, eval mode): spec + data facts + weights, built by the
    task. Run directories and model packages hold the same files, so evaluate, export, resume checks and
    the torch runtime rebuild alike."""
    net = get_task(cfg.task).build_model(cfg, info)
    net.load_state_dict(load_file(str(weights)))
    return net.eval()


def prepare_run_dir(run_dir: Path, cfg: ExperimentConfig, resume: bool = False, overwrite: bool = False,
                    clear: bool = True) -> None:
    """Refuse to mix two runs in one folder: a non-empty `run_dir` needs `resume` (same model and data)
    or `overwrite` (the run's own files are removed when `clear`; anything else in the folder stays)."""
    if resume and overwrite:
        raise RunDirError("--resume continues the run in the folder and --overwrite replaces it: give one")
    entries = sorted(p.name for p in run_dir.iterdir() if p.name not in (LOCK, LOCK_HOLDER)) if run_dir.is_dir() else []
    if not entries:
        return
    if resume:
        _check_same_model(run_dir, cfg)
    elif overwrite:
        if clear:
            _remove_run_files(run_dir)
    else:
        shown = ", ".join(entries[:4]) + (", …" if len(entries) > 4 else "")
        raise RunDirError(f"{run_dir} is not empty ({shown}); continue that run with --resume, replace it with "
                          "--overwrite, or pick another --out")


def _remove_run_files(run_dir: Path) -> None:
    import shutil

    artifacts = RunInfo.load(run_dir).artifacts if (run_dir / RUN_INFO).is_file() else []
    for name in (*RUN_ENTRIES, *artifacts):  # the old run's tokenizer must not leak into the new one
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


# What shapes the trained network(s) (a checkpoint only loads into the same); training knobs may change on resume.
RECIPE_KEYS = ("task", "model", "data.dataset", "data.params", "gan.latent_dim", "gan.conditional", "gan.embed_dim",
               "gan.discriminator", "gan.spectral_norm")


def _recipe(cfg: ExperimentConfig) -> dict[str, Any]:
    dumped = cfg.model_dump(mode="json")
    out: dict[str, Any] = {}
    for key in RECIPE_KEYS:
        value: Any = dumped
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        out[key] = value
    return out


def _check_same_model(run_dir: Path, cfg: ExperimentConfig) -> None:
    """--resume into a run trained with another model or data would load mismatched weights: say which key differs."""
    if not (run_dir / CONFIG).is_file():
        return
    old = load_config(run_dir / CONFIG)
    changed = [f"{key}: {_shown(before)} in the run, {_shown(after)} now"
               for key, before, after in _differences(_recipe(old), _recipe(cfg))]
    if changed:
        raise RunDirError(f"--resume: {run_dir} was trained with another model or data ({'; '.join(changed[:3])}); "
                          f"resume with its own settings ({run_dir / CONFIG}), or start afresh with --overwrite")


def _shown(value: Any) -> str:
    return "unset" if value is None else json.dumps(value)


def _differences(a: Any, b: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = list(a) + [k for k in b if k not in a]
        return [d for k in keys for d in _differences(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))]
    return [] if a == b else [(path, a, b)]
