"""The run directory contract (see README): what each file is, and rebuilding the model from it.

Evaluate and export rebuild everything from a run directory alone: `config.yaml` (the resolved
spec), `run.json` (data facts: input shape, labels, preprocessing, artifacts), the artifacts
themselves (e.g. tokenizer.json) and `model.safetensors`; the task rebuilds the model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors.torch import load_file
from torch import nn

from dlforge.config import ExperimentConfig, load_config
from dlforge.errors import UserError
from dlforge.tasks import get_task

if TYPE_CHECKING:
    from dlforge.data.splits import DataBundle

CONFIG, RUN_INFO, WEIGHTS = "config.yaml", "run.json", "model.safetensors"
METRICS, HISTORY = "metrics.json", "history.jsonl"


@dataclass
class RunInfo:
    """Facts about the data the model was trained on (everything the task's model needs but the spec)."""

    input_shape: list[int]
    labels: list[str]
    integer_input: bool
    preprocessing: dict[str, Any]
    dataset: str
    artifacts: list[str] = field(default_factory=list)  # files beside it (tokenizer.json), copied into packages

    @classmethod
    def from_bundle(cls, bundle: DataBundle, dataset: str) -> RunInfo:
        return cls(list(bundle.input_shape), bundle.labels, bundle.integer_input, bundle.preprocessing, dataset,
                   sorted(bundle.artifacts))

    def save(self, run_dir: Path) -> None:
        (run_dir / RUN_INFO).write_text(json.dumps(asdict(self), indent=2))

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


def load_run(run_dir: Path) -> tuple[ExperimentConfig, RunInfo, nn.Module]:
    """The config, data facts and the trained model (CPU, eval mode) of a run directory."""
    require(run_dir, CONFIG, RUN_INFO, WEIGHTS)
    cfg = load_config(run_dir / CONFIG)
    info = RunInfo.load(run_dir)
    require(run_dir, *info.artifacts)
    net = get_task(cfg.task).build_model(cfg, info)
    net.load_state_dict(load_file(str(run_dir / WEIGHTS)))
    return cfg, info, net.eval()
