"""run.json: the facts about the training data that a model needs besides its spec.

Torch-free and below every task: tasks, the trainer and the torch runtime all read it, and
dlforge.rundir (which asks a task to rebuild a model) builds on it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlforge.preprocessing import Preprocessing, parse_preprocessing

if TYPE_CHECKING:
    from dlforge.data.splits import DataBundle

RUN_INFO = "run.json"


@dataclass
class RunInfo:
    """Facts about the data the model was trained on (everything the task's model needs but the spec)."""

    input_shape: list[int]
    labels: list[str]
    integer_input: bool
    preprocessing: Preprocessing  # how raw inputs become model inputs (dlforge.preprocessing)
    dataset: str
    artifacts: list[str] = field(default_factory=list)  # files beside it (tokenizer.json), copied into packages
    data: dict[str, Any] = field(default_factory=dict)  # how the data was split and measured (split sizes, …)

    @classmethod
    def from_bundle(cls, bundle: DataBundle, dataset: str) -> RunInfo:
        """PreprocessingError if the bundle's preprocessing (a plugin's may be a dict) is of no valid shape."""
        prep = parse_preprocessing(bundle.preprocessing, f"data.dataset '{dataset}': preprocessing")
        shape, artifacts = list(bundle.input_shape), sorted(bundle.artifacts)
        return cls(shape, bundle.labels, bundle.integer_input, prep, dataset, artifacts, dict(bundle.facts))

    def save(self, run_dir: Path) -> None:
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        data["preprocessing"] = self.preprocessing.model_dump(mode="json")
        if not self.data:
            del data["data"]  # runs from before it was recorded read and save byte for byte
        (run_dir / RUN_INFO).write_text(json.dumps(data, indent=2))

    @classmethod
    def load(cls, run_dir: Path) -> RunInfo:
        return cls.read(run_dir / RUN_INFO)

    @classmethod
    def read(cls, path: Path) -> RunInfo:
        """PreprocessingError (naming the file and key) for a preprocessing section of no known shape."""
        data = json.loads(path.read_text())
        prep = parse_preprocessing(data.get("preprocessing"), f"{path}: preprocessing")
        return cls(**{**data, "preprocessing": prep})
