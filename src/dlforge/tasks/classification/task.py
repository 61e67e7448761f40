"""Classification: inputs (images, feature sequences, token ids of text) → one of N labels.

Modalities are data + front-end layers + codecs, not tasks: an image, audio or text classifier is this
task with another dataset and other first layers. Cross-entropy training, accuracy / macro precision,
recall, F1 with a confusion matrix, an ONNX graph returning logits and softmax probabilities.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dlforge.config import ExperimentConfig
from dlforge.data.datasets import DATASETS
from dlforge.data.samples import take
from dlforge.data.splits import DataBundle, load_data
from dlforge.evaluate.metrics import evaluate_model
from dlforge.evaluate.plots import plot_confusion_matrix, plot_learning_curves
from dlforge.export.onnx import INPUT, LOGITS, PROBS, check_parity, dynamic_dims, export_onnx
from dlforge.nn import MODELS, build_model
from dlforge.nn.build import InputNormalize
from dlforge.nn.checks import check_model
from dlforge.nn.generative_archs import ARCH_TASKS
from dlforge.preprocessing import (
    ImagePreprocessing,
    Preprocessing,
    TensorPreprocessing,
    TextPreprocessing,
    TokensPreprocessing,
)
from dlforge.taskapi import StepContext, Task, Vocabulary
from dlforge.text import TOKENIZER_FILE

if TYPE_CHECKING:
    from dlforge.runinfo import RunInfo

PARITY_SAMPLES, CALIBRATION_SAMPLES = 256, 256


class ClassificationTask(Task):
    name = "classification"
    losses = ("loss",)
    metrics = ("accuracy", "precision", "recall", "f1")
    summary = ("accuracy", "precision", "recall", "f1", "loss")
    card = ("confusion_matrix",)
    default_monitor = "val_accuracy"
    has_classifier = True  # model.pretrained replaces its head; train.freeze: backbone is all but it

    def minimize(self, monitor: str) -> bool:
        return monitor == "val_loss"

    # --- load time ------------------------------------------------------------------------------

    def check(self, cfg: ExperimentConfig) -> list[str]:
        problems = check_model(cfg.model, timm=True)
        if cfg.data.dataset in DATASETS:
            entry = DATASETS.get(cfg.data.dataset)
            if self.name not in entry.tasks:
                problems.append(f"data.dataset: '{cfg.data.dataset}' is a dataset for {', '.join(entry.tasks)}, "
                                f"not {self.name} — set `task:` accordingly or pick a labelled dataset")
        allowed = ["val_loss", *(f"val_{m}" for m in self.metrics)]
        if cfg.train.monitor is not None and cfg.train.monitor not in allowed:
            problems.append(f"train.monitor: '{cfg.train.monitor}' is not a {self.name} metric "
                            f"(use one of {', '.join(allowed)})")
        return problems

    # --- data and model -------------------------------------------------------------------------

    def architectures(self) -> list[str]:
        return [name for name in MODELS.names() if name not in ARCH_TASKS]  # timm/<name> too, when timm is there

    def vocabulary(self, cfg: ExperimentConfig) -> Vocabulary | None:
        """Text datasets (their params take `tokenizer`) keep one tokenizer.json; other data has none."""
        entry = DATASETS.get(cfg.data.dataset) if cfg.data.dataset in DATASETS else None
        if entry is None or "tokenizer" not in entry.params.model_fields:
            return None
        params = entry.params.model_validate(cfg.data.params)
        return Vocabulary((TOKENIZER_FILE,), params.model_dump(mode="json", include={"tokenizer"}))

    def load_data(self, cfg: ExperimentConfig, reuse: Path | None = None) -> DataBundle:
        return load_data(cfg.data, cfg.seed, reuse)

    def create_model(self, cfg: ExperimentConfig, bundle: DataBundle) -> nn.Module:
        torch.manual_seed(cfg.seed)  # identical initial weights on every worker
        prep = bundle.preprocessing
        net = build_model(cfg.model, bundle.input_shape, bundle.num_classes, bundle.integer_input, **token_facts(prep))
        if isinstance(net.normalize, InputNormalize):
            net.normalize.set_stats(*train_stats(prep))
        return net

    def build_model(self, cfg: ExperimentConfig, info: RunInfo) -> nn.Module:
        return build_model(cfg.model, tuple(info.input_shape), len(info.labels), info.integer_input,
                           **token_facts(info.preprocessing))

    # --- training ---------------------------------------------------------------------------------

    def train_step(self, tr: StepContext, batch: Any, optimizer_step: bool) -> dict[str, Tensor]:
        x, y = batch
        x = trim_padding(x, pad_id(tr.info.preprocessing))
        if tr.augmenter is not None:
            x, y = tr.augmenter(x, y)
        with tr.sync_gradients(optimizer_step):  # DDP all-reduces only on the stepping micro-batch
            with tr.autocast():
                loss = F.cross_entropy(tr.model(x), y, label_smoothing=tr.cfg.train.label_smoothing)
            tr.backward(loss)
        if optimizer_step:
            tr.optimizer_update()
        return {"loss": loss.detach()}

    # --- evaluation -------------------------------------------------------------------------------

    def evaluate(self, model: nn.Module, batches: Any, info: RunInfo, device: torch.device) -> dict[str, Any]:
        pad = pad_id(info.preprocessing)
        return evaluate_model(model, ((trim_padding(x, pad), y) for x, y in batches), info.labels, device)

    def write_report(self, run_dir: Path, metrics: dict[str, Any], info: RunInfo, plots: bool) -> None:
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        if not plots:
            return
        report = run_dir / "report"
        report.mkdir(exist_ok=True)
        plot_confusion_matrix(metrics["confusion_matrix"], info.labels, report / "confusion_matrix.png")
        from dlforge.rundir import read_history

        if history := read_history(run_dir):
            plot_learning_curves(history, report / "learning_curves.png")

    # --- export -----------------------------------------------------------------------------------

    def export(self, net: nn.Module, bundle: DataBundle, info: RunInfo, cfg: ExperimentConfig, root: Path,
               tolerance: float, quantize: str | None) -> dict[str, Any]:
        x_val: Tensor = take(bundle.val, PARITY_SAMPLES)[0]
        export_onnx(net, x_val, root / "model.onnx", cfg.export.opset, info.integer_input)
        diff = check_parity(net, root / "model.onnx", x_val, tolerance)
        inputs, outputs = signature(info)
        fields: dict[str, Any] = {
            "inputs": inputs, "outputs": outputs, "labels": info.labels,
            "preprocessing": _with_vocab_size(info.preprocessing, net),
            "onnx": {"opset": cfg.export.opset, "parity_max_abs_diff": diff, "tolerance": tolerance,
                     "parity_samples": len(x_val)},
        }
        if quantize:
            from dlforge.export.quantize import quantize_package

            x_test, y_test = take(bundle.test)
            calibration = take(bundle.train, CALIBRATION_SAMPLES)[0]
            fields["quantized"] = quantize_package(net, root, calibration, x_test, y_test)
        return fields


def token_facts(prep: Preprocessing) -> dict[str, int | None]:
    """What `build_model` takes from a tokenizer (padding and space ids, vocabulary size); none for floats."""
    if isinstance(prep, TextPreprocessing):
        return {"pad_id": prep.pad_id, "vocab_size": prep.vocab_size, "space_id": prep.space_id}
    if isinstance(prep, TokensPreprocessing):
        return {"vocab_size": prep.vocab_size}
    return {}


def train_stats(prep: Preprocessing) -> tuple[list[float], list[float]]:
    """The train split's mean/std that data.splits.make_bundle records for float inputs (a plugin's kind too)."""
    if isinstance(prep, ImagePreprocessing | TensorPreprocessing):
        mean, std = prep.mean, prep.std
    else:
        mean, std = (prep.model_extra or {}).get("mean"), (prep.model_extra or {}).get("std")
    if mean is None or std is None:
        raise TypeError(f"kind '{prep.kind}' has no train-split mean/std to normalise with")  # a dlforge bug
    return mean, std


def pad_id(prep: Preprocessing) -> int | None:
    return prep.pad_id if isinstance(prep, TextPreprocessing) else None


def _with_vocab_size(prep: Preprocessing, net: nn.Module) -> Preprocessing:
    """The run's preprocessing with the size of the embedding table the token ids go into (the first one):
    the server refuses other ids with 400 instead of letting the engine fail or read garbage."""
    rows = next((m.num_embeddings for m in net.modules() if isinstance(m, nn.Embedding)), None)
    if rows is None or not isinstance(prep, TextPreprocessing | TokensPreprocessing):
        return prep
    known = prep.vocab_size
    return prep.model_copy(update={"vocab_size": min(rows, known) if known is not None else rows})


def trim_padding(x: Tensor, pad_id: int | None) -> Tensor:
    """Token ids without the columns that are padding in every row: padding changes no prediction
    (the model masks it), it only costs time — a batch of short texts runs at its own length."""
    if pad_id is None:
        return x
    used = (x != pad_id).any(dim=0).nonzero()
    return x[:, : int(used.max()) + 1 if len(used) else 1]


def signature(info: RunInfo) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """V2 input/output tensor specs of the graph, -1 on the dynamic axes."""
    shape = [-1, *info.input_shape]
    for axis in dynamic_dims(info.input_shape, info.integer_input)[1:]:
        shape[axis] = -1
    n = len(info.labels)
    inputs = [{"name": INPUT, "datatype": "INT64" if info.integer_input else "FP32", "shape": shape}]
    outputs = [{"name": name, "datatype": "FP32", "shape": [-1, n]} for name in (LOGITS, PROBS)]
    return inputs, outputs


TASK = ClassificationTask()
__all__ = ["TASK", "ClassificationTask", "signature"]
