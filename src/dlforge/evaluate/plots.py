"""PNG plots for the run report: learning curves and the confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt


@dataclass(frozen=True)
class Panel:
    """One subplot of the learning curves: `(history key, legend label)` pairs over the epochs."""

    title: str
    curves: tuple[tuple[str, str], ...]
    log: bool = False
    ylim: tuple[float, float] | None = None


CLASSIFICATION_PANELS = (
    Panel("loss", (("train_loss", "train"), ("val_loss", "val"))),
    Panel("validation", (("val_accuracy", "val_accuracy"), ("val_f1", "val_f1")), ylim=(0, 1.02)),
)


def plot_learning_curves(history: list[dict[str, Any]], path: Path,
                         panels: tuple[Panel, ...] = CLASSIFICATION_PANELS) -> Path:
    """report/learning_curves.png: one subplot per panel; each task names the history keys it plots."""
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        for key, label in panel.curves:
            ax.plot(epochs, [h[key] for h in history], label=label)
        ax.set(title=panel.title, xlabel="epoch")
        if panel.log:
            ax.set_yscale("log")
        if panel.ylim:
            ax.set_ylim(*panel.ylim)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_confusion_matrix(matrix: list[list[int]], labels: list[str], path: Path) -> Path:
    size = max(4.0, 0.5 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(matrix, cmap="Blues")
    ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xticklabels=labels, yticklabels=labels,
           xlabel="predicted", ylabel="true", title="confusion matrix (test)")
    peak = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            if count:
                ax.text(j, i, str(count), ha="center", va="center",
                        color="white" if count > peak / 2 else "black", fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_translation_curves(history: list[dict[str, Any]], path: Path) -> Path:
    """Loss (train, val) and validation BLEU / chrF / exact match per epoch."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_score) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], label="train")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], label="val")
    ax_loss.set(title="loss", xlabel="epoch")
    ax_loss.legend()
    for key, scale in (("val_bleu", 1.0), ("val_chrf", 1.0), ("val_exact_match", 100.0)):
        ax_score.plot(epochs, [h[key] * scale for h in history], label=key + (" (%)" if scale != 1 else ""))
    ax_score.set(title="validation (greedy)", xlabel="epoch", ylim=(0, 102))
    ax_score.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
