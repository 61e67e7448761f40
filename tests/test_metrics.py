import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from dlforge.evaluate.metrics import evaluate_model


class FixedLogits(torch.nn.Module):
    """Returns the logits it is fed (inputs are one-hot predictions), so predictions are chosen."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_metrics_match_scikit_learn_on_the_same_predictions() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 5, 300)
    pred = np.where(rng.random(300) < 0.7, truth, rng.integers(0, 5, 300))
    logits = torch.nn.functional.one_hot(torch.tensor(pred), 5).float()
    batches = [(logits[i:i + 64], torch.tensor(truth[i:i + 64])) for i in range(0, 300, 64)]
    got = evaluate_model(FixedLogits(), batches, [f"c{i}" for i in range(5)], torch.device("cpu"))
    p, r, f, support = precision_recall_fscore_support(truth, pred, average=None, zero_division=0)
    assert got["accuracy"] == pytest.approx(accuracy_score(truth, pred))
    assert got["precision"] == pytest.approx(p.mean())
    assert got["recall"] == pytest.approx(r.mean())
    assert got["f1"] == pytest.approx(f.mean())
    assert got["per_class"]["c3"]["f1"] == pytest.approx(f[3])
    assert got["per_class"]["c3"]["support"] == support[3]
    assert got["confusion_matrix"] == confusion_matrix(truth, pred).tolist()
    json.dumps(got)


def test_plots_are_written(tmp_path: Path) -> None:
    from dlforge.evaluate.plots import plot_confusion_matrix, plot_learning_curves

    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "val_accuracy": 0.5, "val_f1": 0.4}
               for e in (1, 2, 3)]
    a = plot_learning_curves(history, tmp_path / "curves.png")
    b = plot_confusion_matrix([[5, 1], [0, 7]], ["a", "b"], tmp_path / "cm.png")
    assert a.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and b.stat().st_size > 1000
