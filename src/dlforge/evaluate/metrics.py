"""Classification metrics with torchmetrics.

torchmetrics keeps sufficient statistics (tp/fp/fn counts, confusion matrix) and sums them across
workers on `compute()`, so macro scores under DDP are derived from global counts, never averaged
per worker. Loaders shard evaluation data without padding, so no sample counts twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)


def metric_collection(num_classes: int) -> MetricCollection:
    kw: dict[str, Any] = {"num_classes": num_classes}
    return MetricCollection({
        "accuracy": MulticlassAccuracy(average="micro", **kw),
        "precision": MulticlassPrecision(average="macro", **kw),
        "recall": MulticlassRecall(average="macro", **kw),
        "f1": MulticlassF1Score(average="macro", **kw),
        "precision_per_class": MulticlassPrecision(average=None, **kw),
        "recall_per_class": MulticlassRecall(average=None, **kw),
        "f1_per_class": MulticlassF1Score(average=None, **kw),
        "confusion_matrix": MulticlassConfusionMatrix(**kw),
    })


def summarize(values: dict[str, Tensor], labels: list[str]) -> dict[str, Any]:
    """The metrics.json layout: scalar macro scores, per_class, confusion_matrix (rows = truth)."""
    confusion = values["confusion_matrix"].long()
    support = confusion.sum(dim=1).tolist()
    per_class = {
        label: {"precision": float(values["precision_per_class"][i]),
                "recall": float(values["recall_per_class"][i]),
                "f1": float(values["f1_per_class"][i]), "support": int(support[i])}
        for i, label in enumerate(labels)
    }
    return {
        "accuracy": float(values["accuracy"]), "precision": float(values["precision"]),
        "recall": float(values["recall"]), "f1": float(values["f1"]),
        "samples": int(confusion.sum()), "per_class": per_class, "confusion_matrix": confusion.tolist(),
    }


@torch.no_grad()
def evaluate_model(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], labels: list[str],
                   device: torch.device) -> dict[str, Any]:
    """Loss and all metrics of `model` over `batches` (this worker's shard; synced on compute)."""
    was_training = model.training
    model.eval()
    metrics = metric_collection(len(labels)).to(device)
    loss = MeanMetric().to(device)
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x).float()
        loss.update(F.cross_entropy(logits, y, reduction="none"))
        metrics.update(logits.argmax(dim=1), y)
    model.train(was_training)
    return {"loss": float(loss.compute()), **summarize(metrics.compute(), labels)}
