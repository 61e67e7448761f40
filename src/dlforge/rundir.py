"""The run directory contract (see README): what each file is, and rebuilding the model from it.

Evaluate and export rebuild everything from a run directory alone: `config.yaml` (the resolved
spec), `run.json` (data facts: input shape, labels, preprocessing) and `model.safetensors`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from dlforge.config import ExperimentConfig, load_config
from dlforge.errors import UserError
from dlforge.nn import Net, build_model

CONFIG, RUN_INFO, WEIGHTS = "config.yaml", "run.json", "model.safetensors"
METRICS, HISTORY = "metrics.json", "history.jsonl"


@dataclass
class RunInfo:
    """Facts about the data the model was trained on (everything `build_model` needs but the spec)."""

    input_shape: list[int]
    labels: list[str]
    integer_input: bool
    preprocessing: dict[str, Any]
    dataset: str

    def save(self, run_dir: Path) -> None:
        (run_dir / RUN_INFO).write_text(json.dumps(self.__dict__, indent=2))

    @classmethod
    def load(cls, run_dir: Path) -> RunInfo:
        return cls(**json.loads((run_dir / RUN_INFO).read_text()))


class RunDirError(UserError, FileNotFoundError):
    """A run directory that is missing files, or that a command must not write into."""


def require(run_dir: Path, *names: str) -> None:
    missing = [n for n in names if not (run_dir / n).is_file()]
    if missing:
        raise RunDirError(f"{run_dir}: not a finished run directory (missing {', '.join(missing)}); "
                          f"train first: dlforge train CONFIG --out {run_dir}")


def load_run(run_dir: Path) -> tuple[ExperimentConfig, RunInfo, Net]:
    """The config, data facts and the trained model (CPU, eval mode) of a run directory."""
    require(run_dir, CONFIG, RUN_INFO, WEIGHTS)
    cfg = load_config(run_dir / CONFIG)
    info = RunInfo.load(run_dir)
    net = build_model(cfg.model, tuple(info.input_shape), len(info.labels), info.integer_input)
    net.load_state_dict(load_file(str(run_dir / WEIGHTS)))
    return cfg, info, net.eval()
