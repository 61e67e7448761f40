"""The task contract: everything a stage (train, evaluate, export, serve, the CLI) may ask of a task.

A leaf below every stage. Stages import this module and look tasks up by name in `TASKS`; they never
import a task, nor name one. Each task is a package above the stages (`dlforge/tasks/<name>/`) or a
third-party distribution registered through the `dlforge.tasks` entry point group, and has two sides:

| side                 | object            | imports        | used by                                    |
|----------------------|-------------------|----------------|--------------------------------------------|
| training (`module`)  | `TASK: Task`      | torch, freely  | train, evaluate, export, `dlforge params`  |
| serving (`serving`)  | `SERVING: Serving`| no torch       | the server, `dlforge predict`              |

Optional hooks have defaults here, so a stage calls them without asking whether they exist.
docs/architecture.md draws the flow and says how to add a task.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from dlforge.errors import UserError
from dlforge.registry import Registry

if TYPE_CHECKING:
    import contextlib

    import numpy as np
    import torch
    from torch import Tensor, nn

    from dlforge.config import ExperimentConfig
    from dlforge.config.schema import OptimizerConfig
    from dlforge.data.splits import DataBundle
    from dlforge.runinfo import RunInfo
    from dlforge.serve.protocol import MetadataTensor

__all__ = ["TASKS", "Codec", "Engine", "PredictRequest", "Predictions", "Serving", "StepContext", "Task", "TaskEntry",
           "TaskError", "Vocabulary", "get_codec", "get_serving", "get_task"]


class TaskError(UserError):
    """A task that cannot be found or does not keep the contract (e.g. a broken plugin)."""


class StepContext(Protocol):
    """What the shared trainer offers a task's `setup` and `train_step` (dlforge.train.trainer.Trainer)."""

    cfg: ExperimentConfig
    info: RunInfo
    net: nn.Module  # the plain model (saved, exported)
    model: nn.Module  # what runs: maybe DDP- and/or compile-wrapped
    optimizer: Any
    scheduler: Any
    augmenter: nn.Module | None
    extra: dict[str, Any]  # task state with state_dict()/load_state_dict(), checkpointed and resumed

    def autocast(self) -> contextlib.AbstractContextManager[Any]: ...

    def sync_gradients(self, optimizer_step: bool) -> contextlib.AbstractContextManager[Any]: ...

    def backward(self, loss: Tensor) -> None: ...

    def optimizer_update(self) -> None: ...

    def make_optimizer(self, params: nn.Module | Iterable[nn.Parameter],
                       settings: OptimizerConfig | None = None) -> tuple[Any, Any]: ...


class Engine(Protocol):
    """A task's own inference engine (dlforge.serve.contract.Runtime): V2 metadata and `infer` over batches."""

    metadata: Any

    def infer(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class Vocabulary:
    """What gives a task's token ids their meaning: the tokenizer files a run keeps (artifacts) and the
    `data.params` keys that shape them, resolved (defaults filled in). `model.pretrained` from a run with
    the same files reuses that run's (dlforge.vocabulary)."""

    files: tuple[str, ...]  # e.g. ("tokenizer.json",)
    settings: dict[str, Any]  # data.params key → its resolved value, e.g. {"tokenizer": {"kind": "char", …}}


class Task:
    """The training side of a task (imports torch). Every method gets what it needs as arguments.

    `losses` names what `train_step` returns (history gets `train_<name>`), `metrics` the validation
    scores `evaluate` returns besides `loss` (history gets `val_<name>`; `train.monitor` picks one),
    `summary` the metrics the CLI shows in its table, in order.
    """

    name: ClassVar[str]
    losses: ClassVar[tuple[str, ...]] = ("loss",)
    metrics: ClassVar[tuple[str, ...]] = ()
    summary: ClassVar[tuple[str, ...]] = ("loss",)
    card: ClassVar[tuple[str, ...]] = ()  # test metrics the package manifest keeps besides loss, samples, `metrics`
    default_monitor: ClassVar[str] = "val_loss"
    lower_is_better: ClassVar[frozenset[str]] = frozenset({"val_loss"})
    has_classifier: ClassVar[bool] = False  # model.pretrained swaps its head; train.freeze: backbone spares it
    unused_parameters: ClassVar[bool] = False  # passes that leave parameters unused (DDP must not wait for them)
    own_datasets: ClassVar[bool] = False  # checks data.dataset itself (its own registry) in `check`

    def minimize(self, monitor: str) -> bool:
        """Whether a lower value of `monitor` is better (val_loss, val_cer…)."""
        return monitor in self.lower_is_better

    def check(self, cfg: ExperimentConfig) -> list[str]:
        """Problems with the data/model/monitor this task cannot use, each `key.path: problem — fix`.

        Called at load time, before any data is read; the dataset's own params are already checked."""
        return []

    def architectures(self) -> list[str]:
        """The named architectures `model.arch` may take for this task (`dlforge models` lists them by task,
        and a config naming another task's architecture is told which task it belongs to)."""
        return []

    def load_data(self, cfg: ExperimentConfig, reuse: Path | None = None) -> DataBundle:
        """Seeded splits; `reuse` is a run directory whose saved artifacts (tokenizers…) to use as they are."""
        raise NotImplementedError

    def vocabulary(self, cfg: ExperimentConfig) -> Vocabulary | None:
        """The tokenizers of `cfg`'s data (None: its inputs are not token ids of a trained tokenizer)."""
        return None

    def create_model(self, cfg: ExperimentConfig, bundle: DataBundle) -> nn.Module:
        """The freshly initialised model(s), seeded identically on every worker (data stats filled in)."""
        raise NotImplementedError

    def build_model(self, cfg: ExperimentConfig, info: RunInfo) -> nn.Module:
        """The same architecture rebuilt from the recipe alone (resume, evaluate, export, torch runtime)."""
        raise NotImplementedError

    def setup(self, trainer: StepContext) -> None:
        """Once, after the shared trainer is built: add task state (a second optimizer, an EMA copy…)
        to `trainer.extra`; each value with `state_dict`/`load_state_dict` is checkpointed and resumed."""

    def train_step(self, trainer: StepContext, batch: Any, optimizer_step: bool) -> dict[str, Tensor]:
        """Forward, backward and — when `optimizer_step` — the update(s) for one micro-batch already on the
        device; returns the detached losses named in `losses`. The step owns its optimizers: the shared
        `trainer.optimizer_update()` serves the common single-optimizer case."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, batches: Any, info: RunInfo, device: torch.device) -> dict[str, Any]:
        """`loss` and every name in `metrics` (plus whatever metrics.json should hold), over this worker's
        shard and synchronised across workers; used for validation each epoch and for the test split."""
        raise NotImplementedError

    def on_epoch_end(self, model: nn.Module, run_dir: Path, epoch: int) -> None:
        """After each epoch's checkpoint, on the main worker: per-epoch artifacts (a GAN's sample grid)."""

    def write_report(self, run_dir: Path, metrics: dict[str, Any], info: RunInfo, plots: bool) -> None:
        """metrics.json and report/ for the test split (main worker only)."""
        import json

        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))

    def export(self, net: nn.Module, bundle: DataBundle, info: RunInfo, cfg: ExperimentConfig, root: Path,
               tolerance: float, quantize: str | None) -> dict[str, Any]:
        """Write the graph file(s) into the package folder `root`, parity-checked against torch on real
        validation samples (ExportError beyond `tolerance`); return the manifest fields `inputs`, `outputs`
        (the graph's V2 signature), `labels`, `preprocessing`, `onnx`, and optionally `graphs`, `quantized`,
        `task_info`. The shared exporter adds weights, config, the run's artifacts and every hash."""
        raise NotImplementedError


class Codec:
    """A loaded package's request side (torch-free): the client's tensors ↔ the graph's tensors.

    `inputs`/`outputs` are what clients see in the model metadata and send/receive; `decode` turns one
    request's checked inputs into the graph's inputs (rows on axis 0) and `encode` one request's graph
    outputs into the response tensors. Bad input raises `dlforge.serve.protocol.ProtocolError` (400).
    `optional` names client inputs a request may leave out (a generator takes `seed` or `latent`).
    `pad` gives, per graph input, the value that pads axis 1 so requests of different lengths can share a
    batch (empty: only equal shapes batch together); `output_pad` the same for engine outputs whose axis 1
    differs from batch to batch (decoded token ids), so a request cut into slices is joined. `ranks_labels`:
    outputs include `probabilities` over the manifest's labels, so `/classify` may answer with the top k."""

    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]
    optional: frozenset[str] = frozenset()
    pad: dict[str, int | float] = {}  # noqa: RUF012 (read-only default, replaced per instance)
    output_pad: dict[str, int | float] = {}  # noqa: RUF012 (read-only default, replaced per instance)
    ranks_labels: bool = False

    def decode(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return inputs

    def encode(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return outputs

    def response_parameters(self, graph: dict[str, np.ndarray]) -> dict[str, float | int | str | bool]:
        """Facts about one request's decoded inputs for the response's `parameters` (text: the [UNK] share)."""
        return {}

    def decode_upload(self, data: bytes | Path) -> dict[str, np.ndarray]:
        """One uploaded file (an image, an audio clip), as bytes or, offline, its path → the graph's inputs
        for one row."""
        from dlforge.serve.tensors import ProtocolError

        raise ProtocolError("this model takes no file uploads; POST its inputs as tensors to /v2/models/…/infer")

    def decode_texts(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Raw strings → the graph's inputs, one row each."""
        from dlforge.serve.tensors import ProtocolError

        raise ProtocolError("this model takes no text; send an image file (curl -F file=@digit.png) or use /infer")


@dataclass
class Predictions:
    """What `dlforge predict` shows: one row per input (also the `--json` output) and files it wrote."""

    columns: list[str]
    rows: list[dict[str, Any]]
    table: list[list[str]] = field(default_factory=list)  # printable cells; defaults to the rows' values
    written: list[Path] = field(default_factory=list)


@dataclass
class PredictRequest:
    """The inputs of `dlforge predict`: files, strings, and the options a task may read."""

    files: list[Path]
    texts: list[str]
    top_k: int = 3
    int8: bool = False
    out: Path = Path("predictions")


class Serving:
    """The serving side of a task (torch-free): its codec, its own engines, offline predict."""

    name: ClassVar[str]

    def codec(self, package: Any) -> Codec:
        """The codec for a loaded, hash-verified package of this task."""
        raise NotImplementedError

    def runtime(self, kind: str, package: Any, threads: int) -> Engine | None:
        """This task's own engine of `kind` (seq2seq's decoding loop, a classifier's torch network), or None
        for the shared engine (ONNX Runtime over the package's graph)."""
        if kind == "onnx":
            return None
        raise TaskError(f"{package.root}: --runtime {kind} does not serve task {self.name} packages; serve it "
                        "with the default runtime (onnx)")

    def predict(self, package: Any, request: PredictRequest) -> Predictions:
        """`dlforge predict PACKAGE FILE…`: run the package on files/strings with no server."""
        entry = TASKS.get(self.name)
        own = importlib.import_module(entry.commands).COMMANDS if entry.commands else []
        hint = f", or use {' / '.join(f'dlforge {command.__name__}' for command in own)}" if own else ""
        raise TaskError(f"this model (task {self.name}) takes no files or --text in `dlforge predict`; serve the "
                        f"package and POST its inputs to /v2/models/…/infer{hint}")


@dataclass(frozen=True)
class TaskEntry:
    """Where a task lives: `module` exports `TASK` (a Task), `serving` exports `SERVING` (a Serving), and
    `commands`, if any, `COMMANDS`: typer command functions the CLI adds (`dlforge translate`)."""

    module: str
    serving: str
    doc: str
    commands: str | None = None


TASKS: Registry[TaskEntry] = Registry("task", plugins="dlforge.tasks")
for _name, _doc in (("classification", "inputs (images, sequences, text, audio) → one label"),
                    ("seq2seq", "text → text (translation): encoder-decoder, greedy / beam search"),
                    ("gan", "noise [+ class] → image (generator + discriminator, EMA)"),
                    ("denoise", "noisy image → clean image")):
    _commands = f"dlforge.tasks.{_name}.commands" if _name in ("seq2seq", "gan") else None
    TASKS.add(_name, TaskEntry(f"dlforge.tasks.{_name}.task", f"dlforge.tasks.{_name}.serving", _doc, _commands))


def _load(name: str, attribute: str, kind: type[Any]) -> Any:
    entry = TASKS.get(name)
    module = entry.module if attribute == "TASK" else entry.serving
    try:
        found = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as exc:
        raise TaskError(f"task '{name}' ({TASKS.origin(name)}): cannot load {module}.{attribute} "
                        f"({type(exc).__name__}: {exc})") from None
    if not isinstance(found, kind):
        raise TaskError(f"task '{name}' ({TASKS.origin(name)}): {module}.{attribute} is a "
                        f"{type(found).__name__}, not a dlforge.taskapi.{kind.__name__}")
    return found


def get_task(name: str) -> Task:
    """The training side of task `name` (RegistryError lists the known tasks)."""
    task: Task = _load(name, "TASK", Task)
    return task


def get_serving(name: str) -> Serving:
    """The torch-free serving side of task `name`."""
    serving: Serving = _load(name, "SERVING", Serving)
    return serving


def get_codec(package: Any) -> Codec:
    """The serving codec for a loaded, hash-verified package (torch is never imported)."""
    return get_serving(package.manifest.task).codec(package)
