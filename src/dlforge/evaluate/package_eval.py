"""`dlforge evaluate PACKAGE --data FOLDER|TABLE`: a classifier package scored on new labelled data.

The inputs go through the package's serving codec and ONNX Runtime (as `dlforge predict --input` does), so
the numbers are those of the model as deployed; they are scored by the same torchmetrics collection as
training's evaluation and written in the same layout (metrics.json, report/confusion_matrix.png). Labels
come from class folders (`FOLDER/<label>/…`) or a table's label column, and must be labels the package knows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlforge.bulk import BulkError, Row, decode_files, decode_texts, text_batches, text_column
from dlforge.evaluate.metrics import metric_collection, summarize
from dlforge.evaluate.plots import plot_confusion_matrix
from dlforge.export.package import ModelPackage, load_package
from dlforge.preprocessing import AudioPreprocessing, ImagePreprocessing, TextPreprocessing
from dlforge.taskapi import get_codec

BATCH = 64


def _labelled_files(root: Path, package: ModelPackage) -> Iterator[tuple[list[Path], list[int]]]:
    from dlforge.bulk import _file_suffixes

    known = {label: i for i, label in enumerate(package.manifest.labels)}
    suffixes = _file_suffixes(package.manifest.preprocessing)
    folders = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    unknown = [p.name for p in folders if p.name not in known]
    if not folders or unknown:
        raise BulkError(f"--data {root}: needs one folder per label of the package ({', '.join(known)})"
                        + (f"; {', '.join(unknown)} is not one of them" if unknown else ""))
    files = [(p, known[folder.name]) for folder in folders for p in sorted(folder.rglob("*"))
             if p.is_file() and p.suffix.lower() in suffixes]
    if not files:
        raise BulkError(f"--data {root}: no {'/'.join(suffixes)} files in its label folders")
    for start in range(0, len(files), BATCH):
        chunk = files[start:start + BATCH]
        yield [p for p, _ in chunk], [t for _, t in chunk]


def _labelled_texts(path: Path, package: ModelPackage, column: str | None,
                    label_column: str) -> Iterator[tuple[list[str], list[str], list[int]]]:
    known = {label: i for i, label in enumerate(package.manifest.labels)}
    labels = text_column(path, label_column)
    unknown = sorted(set(labels) - set(known))
    if unknown:
        raise BulkError(f"--data {path}: label column '{label_column}' holds {', '.join(unknown[:5])}, not labels "
                        f"of this package ({', '.join(known)})")
    texts = text_column(path, column)
    for ids, chunk in text_batches(texts, BATCH):
        yield ids, chunk, [known[labels[int(i) - 1]] for i in ids]


def evaluate_package(package_dir: Path, data: Path, out: Path, column: str | None = None,
                     label_column: str = "label", plots: bool = True) -> dict[str, Any]:
    """Score a classifier package on `data`; writes `out`/metrics.json and report/; returns the metrics."""
    from dlforge.serve.runtime import load_runtime

    package = load_package(package_dir)
    prep, codec = package.manifest.preprocessing, get_codec(package)
    if not codec.ranks_labels:
        raise BulkError(f"{package_dir}: a {package.manifest.task} package; dlforge evaluate --data scores "
                        "models that answer labels (a run directory's own test split: dlforge evaluate RUN_DIR)")
    if not data.exists():
        raise BulkError(f"--data {data}: no such file or folder")
    runtime = load_runtime("onnx", package, threads=0)
    metrics = metric_collection(len(package.manifest.labels))
    losses: list[torch.Tensor] = []
    errors: list[str] = []

    def score(rows: list[Row], graph: dict[str, np.ndarray] | None, targets: list[int]) -> None:
        kept = [t for row, t in zip(rows, targets, strict=True) if row.error is None]
        errors.extend(f"{row.source}: {row.error}" for row in rows if row.error is not None)
        if graph is None:
            return
        probs = torch.from_numpy(codec.encode(runtime.infer(graph))["probabilities"]).double()
        y = torch.tensor(kept)
        metrics.update(probs.argmax(dim=1), y)
        losses.append(-torch.log(probs[torch.arange(len(y)), y].clamp_min(1e-12)))

    if isinstance(prep, TextPreprocessing):
        for ids, texts, targets in _labelled_texts(data, package, column, label_column):
            score(*decode_texts(codec, ids, texts), targets)
    elif isinstance(prep, ImagePreprocessing | AudioPreprocessing):
        for files, targets in _labelled_files(data, package):
            score(*decode_files(codec, data, files), targets)
    else:
        raise BulkError(f"{package_dir}: its inputs are raw tensors; evaluate it on .npy files with a script")
    if not losses:
        raise BulkError(f"--data {data}: no input could be read ({errors[0] if errors else 'none found'})")
    result = {"loss": float(torch.cat(losses).mean()), **summarize(metrics.compute(), package.manifest.labels),
              "package": str(package_dir), "task": package.manifest.task, "data": str(data), "unreadable": errors}
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    if plots:
        (out / "report").mkdir(exist_ok=True)
        plot_confusion_matrix(result["confusion_matrix"], package.manifest.labels, out / "report" /
                              "confusion_matrix.png")
    return result
