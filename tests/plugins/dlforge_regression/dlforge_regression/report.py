"""metrics.json with a linear baseline beside the network's scores, and report/ plots.

The baseline is scikit-learn's LinearRegression, fitted on the run's own train split and scored on its
own test split: a network that cannot beat it on tabular data is not worth its parameters.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlforge.evaluate.plots import Panel, plot_learning_curves
from dlforge.rundir import METRICS, REPORT, load_run, read_history
from dlforge_regression.data import load_regression_data

PANELS = (
    Panel("loss (MSE of the standardised target)", (("train_loss", "train"), ("val_loss", "val"))),
    Panel("R² on the validation split", (("val_r2", "network"),)),
)


def linear_baseline(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                    y_test: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    """baseline_mse/mae/r2 of an ordinary least-squares fit, and its test predictions."""
    from sklearn.linear_model import LinearRegression
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    predicted = LinearRegression().fit(x_train, y_train).predict(x_test)
    scores = {"baseline": "scikit-learn LinearRegression fitted on the train split",
              "baseline_mse": float(mean_squared_error(y_test, predicted)),
              "baseline_mae": float(mean_absolute_error(y_test, predicted)),
              "baseline_r2": float(r2_score(y_test, predicted))}
    return scores, predicted


def write_regression_report(run_dir: Path, metrics: dict[str, Any], plots: bool) -> None:
    """metrics.json (the network's test scores and the baseline's); with `plots`, report/predictions.png
    (predicted against true, both models, test split) and report/learning_curves.png."""
    cfg, _, net = load_run(run_dir)
    bundle = load_regression_data(cfg)
    (x_train, y_train), (x_test, y_test) = bundle.train.tensors, bundle.test.tensors
    baseline, predicted = linear_baseline(x_train.numpy(), y_train.numpy(), x_test.numpy(), y_test.numpy())
    (run_dir / METRICS).write_text(json.dumps({**metrics, **baseline}, indent=2))
    if not plots:
        return
    report = run_dir / REPORT
    report.mkdir(exist_ok=True)
    with torch.no_grad():
        network = net(x_test).squeeze(-1).numpy()
    plot_predictions(y_test.numpy(), {"network": network, "linear baseline": predicted}, report / "predictions.png")
    if history := read_history(run_dir):
        plot_learning_curves(history, report / "learning_curves.png", PANELS)


def plot_predictions(truth: np.ndarray, predictions: dict[str, np.ndarray], path: Path) -> Path:
    import matplotlib.pyplot as plt  # dlforge.evaluate.plots chose the Agg backend

    fig, ax = plt.subplots(figsize=(5, 5))
    for label, values in predictions.items():
        ax.scatter(truth, values, s=12, alpha=0.7, label=label)
    low, high = float(truth.min()), float(truth.max())
    ax.plot([low, high], [low, high], color="grey", linewidth=1, label="perfect")
    ax.set(title="test split", xlabel="true", ylabel="predicted")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
