"""Tasks: what differs between kinds of models, one module each, behind one small contract.

The loop, checkpoints, exact resume, `--nproc`, AMP, progress bars, the package and the server are
shared and task-agnostic. They call the experiment's task (`task:` in the experiment file, default
`classification`) at the points below; docs/architecture.md draws the flow.

| when              | call                                                  | classification does              |
|-------------------|-------------------------------------------------------|----------------------------------|
| load time         | `check(cfg) -> ["key.path: problem", …]`              | dataset kind, model spec, monitor |
| data              | `load_data(cfg, reuse) -> DataBundle`                 | seeded stratified splits          |
| model             | `create_model(cfg, bundle)`, `build_model(cfg, info)` | layer list / arch → `Net`         |
| training          | `setup(trainer)`, `train_step(trainer, batch, step)`  | cross-entropy, one optimizer      |
| validation, test  | `evaluate(model, batches, info, device)`, `metrics`   | accuracy, macro P/R/F1, confusion |
| evaluate          | `write_report(run_dir, metrics, info, plots)`         | metrics.json, confusion matrix    |
| export            | `export(net, bundle, info, cfg, root, …)`             | model.onnx + parity, int8         |
| serving (no torch)| `codec(manifest) -> Codec` (decode / encode)          | tensors as is; text → token ids   |

A task module imports torch freely; its serving codec lives in a torch-free module of its own (the
server never imports torch). Both are named here, and imported only when a run or a package asks
for the task, so adding a task is one entry below, one module (+ its codec module) and its tests.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from dlforge.registry import Registry

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import Tensor, nn

    from dlforge.config import ExperimentConfig
    from dlforge.data.splits import DataBundle
    from dlforge.runinfo import RunInfo
    from dlforge.serve.protocol import MetadataTensor
    from dlforge.train.trainer import Trainer

__all__ = ["TASKS", "Codec", "Task", "TaskEntry", "get_codec", "get_task"]


class Task(Protocol):
    """The training side of a task (imports torch). Every method gets what it needs as arguments.

    `losses` names what `train_step` returns (history gets `train_<name>`), `metrics` the validation
    scores `evaluate` returns besides `loss` (history gets `val_<name>`; `train.monitor` picks one).
    """

    name: str
    losses: tuple[str, ...]
    metrics: tuple[str, ...]
    default_monitor: str

    def minimize(self, monitor: str) -> bool:
        """Whether a lower value of `monitor` is better (val_loss, val_cer…)."""
        ...

    def check(self, cfg: ExperimentConfig) -> list[str]:
        """Problems with the data/model/monitor this task cannot use, each `key.path: problem — fix`.

        Called at load time, before any data is read; the dataset's own params are already checked."""
        ...

    def load_data(self, cfg: ExperimentConfig, reuse: Path | None = None) -> DataBundle:
        """Seeded splits; `reuse` is a run directory whose saved artifacts (tokenizers…) to use as they are."""
        ...

    def create_model(self, cfg: ExperimentConfig, bundle: DataBundle) -> nn.Module:
        """The freshly initialised model(s), seeded identically on every worker (data stats filled in)."""
        ...

    def build_model(self, cfg: ExperimentConfig, info: RunInfo) -> nn.Module:
        """The same architecture rebuilt from the recipe alone (resume, evaluate, export, torch runtime)."""
        ...

    def setup(self, trainer: Trainer) -> None:
        """Once, after the shared trainer is built: add task state (a second optimizer, an EMA copy…)
        to `trainer.extra`; each value with `state_dict`/`load_state_dict` is checkpointed and resumed."""
        ...

    def train_step(self, trainer: Trainer, batch: Any, optimizer_step: bool) -> dict[str, Tensor]:
        """Forward, backward and — when `optimizer_step` — the update(s) for one micro-batch already on the
        device; returns the detached losses named in `losses`. The step owns its optimizers: the shared
        `trainer.optimizer_update()` serves the common single-optimizer case."""
        ...

    def evaluate(self, model: nn.Module, batches: Any, info: RunInfo, device: torch.device) -> dict[str, Any]:
        """`loss` and every name in `metrics` (plus whatever metrics.json should hold), over this worker's
        shard and synchronised across workers; used for validation each epoch and for the test split."""
        ...

    def write_report(self, run_dir: Path, metrics: dict[str, Any], info: RunInfo, plots: bool) -> None:
        """metrics.json and report/ for the test split (main worker only)."""
        ...

    def export(self, net: nn.Module, bundle: DataBundle, info: RunInfo, cfg: ExperimentConfig, root: Path,
               tolerance: float, quantize: str | None) -> dict[str, Any]:
        """Write the graph file(s) into the package folder `root`, parity-checked against torch on real
        validation samples (ExportError beyond `tolerance`); return the manifest fields `inputs`, `outputs`
        (the graph's V2 signature), `labels`, `preprocessing`, `onnx`, and optionally `graphs`, `quantized`,
        `task_info`. The shared exporter adds weights, config, the run's artifacts and every hash."""
        ...


class Codec(Protocol):
    """The serving side of a task (torch-free): the client's tensors ↔ the graph's tensors.

    `inputs`/`outputs` are what clients see in the model metadata and send/receive; `decode` turns one
    request's checked inputs into the graph's inputs (rows on axis 0) and `encode` one request's graph
    outputs into the response tensors. Bad input raises `dlforge.serve.protocol.ProtocolError` (400).
    `optional` names client inputs a request may leave out (a generator takes `seed` or `latent`).
    `pad` gives, per graph input, the value that pads axis 1 so requests of different lengths can share a
    batch (empty: only equal shapes batch together)."""

    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]
    optional: frozenset[str]
    pad: dict[str, int | float]

    def decode(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def encode(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class TaskEntry:
    """Where a task lives: `module` exports `TASK` (training side), `codec_module` exports `codec(package)`."""

    module: str
    codec_module: str
    doc: str


TASKS: Registry[TaskEntry] = Registry("task")
TASKS.add("classification", TaskEntry("dlforge.tasks.classification", "dlforge.tasks.classification_codec",
                                      "inputs (images, sequences, text) → one label"))
TASKS.add("seq2seq", TaskEntry("dlforge.tasks.seq2seq", "dlforge.tasks.seq2seq_codec",
                               "text → text (translation): encoder-decoder, greedy / beam search"))
TASKS.add("gan", TaskEntry("dlforge.tasks.gan", "dlforge.tasks.gan_codec",
                           "noise [+ class] → image (generator + discriminator, EMA)"))
TASKS.add("denoise", TaskEntry("dlforge.tasks.denoise", "dlforge.tasks.denoise_codec", "noisy image → clean image"))


def get_task(name: str) -> Task:
    """The training side of task `name` (RegistryError lists the known tasks)."""
    task: Task = importlib.import_module(TASKS.get(name).module).TASK
    return task


def get_codec(package: Any) -> Codec:
    """The serving codec for a loaded, hash-verified package (torch is never imported)."""
    module = importlib.import_module(TASKS.get(package.manifest.task).codec_module)
    codec: Codec = module.codec(package)
    return codec
