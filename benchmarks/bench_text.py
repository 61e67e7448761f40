"""Text classification: a dlforge text model vs a TF-IDF char n-gram + logistic regression baseline, same split.

    python benchmarks/bench_text.py                              # examples/text_langid.yaml
    python benchmarks/bench_text.py CONFIG --out runs/bench_text --set train.epochs=5

Both see the same raw strings and the same seeded stratified train/val/test split (the dataset's
loader and `split_indices`, as training does). The baseline is scikit-learn's TfidfVectorizer over
character 1-4-grams within word boundaries and LogisticRegression, its C picked on the validation
split; the model is `dlforge train CONFIG` in this process. Prints test accuracy, macro F1 and training
samples/s for both (the model's: the mean of its epochs, from history.jsonl).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score

from dlforge.config import ExperimentConfig
from dlforge.data.datasets import DATASETS
from dlforge.data.splits import split_indices
from dlforge.experiment import load_experiment
from dlforge.train.run import train_run

ROOT = Path(__file__).resolve().parents[1]


def splits(cfg: ExperimentConfig) -> dict[str, tuple[list[str], list[int]]]:
    """(texts, labels) per split, exactly the rows training uses."""
    entry = DATASETS.get(cfg.data.dataset)
    raw = entry.load(entry.params.model_validate(cfg.data.params), cfg.seed)
    if raw.texts is None:
        raise SystemExit(f"{cfg.data.dataset} is not a text dataset")
    parts = split_indices(raw.y, cfg.data.val_fraction, cfg.data.test_fraction, cfg.seed)
    return {name: ([raw.texts[i] for i in idx.tolist()], raw.y[idx].tolist())
            for name, idx in zip(("train", "val", "test"), parts, strict=True)}


def baseline(data: dict[str, tuple[list[str], list[int]]]) -> dict[str, Any]:
    """TF-IDF char n-grams + logistic regression; C chosen on the validation split."""
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = data["train"], data["val"], data["test"]
    best: tuple[float, Any, Any, float] | None = None
    for c in (1.0, 3.0, 10.0, 30.0):
        started = time.perf_counter()
        vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), sublinear_tf=True, lowercase=True)
        model = LogisticRegression(C=c, max_iter=2000).fit(vectorizer.fit_transform(x_train), y_train)
        seconds = time.perf_counter() - started
        score = accuracy_score(y_val, model.predict(vectorizer.transform(x_val)))
        if best is None or score > best[0]:
            best = (score, vectorizer, model, seconds)
    assert best is not None
    _, vectorizer, model, seconds = best
    predicted = model.predict(vectorizer.transform(x_test))
    return {"accuracy": accuracy_score(y_test, predicted), "f1": f1_score(y_test, predicted, average="macro"),
            "samples_per_s": len(x_train) / seconds, "C": model.C}


def train_ours(cfg: ExperimentConfig, out: Path) -> dict[str, Any]:
    metrics = train_run(cfg, out)
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    return {"accuracy": metrics["accuracy"], "f1": metrics["f1"], "train_s": sum(h["time_s"] for h in history),
            "samples_per_s": sum(h["samples_per_s"] for h in history) / len(history)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default=str(ROOT / "examples/text_langid.yaml"))
    parser.add_argument("--out", default="runs/bench_text")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    cfg = load_experiment(args.config, [*args.overrides, "train.progress=false", "eval.plots=false"])
    data = splits(cfg)
    print(f"{cfg.data.dataset}: {len(data['train'][0])} train / {len(data['val'][0])} val / "
          f"{len(data['test'][0])} test texts")
    base = baseline(data)
    print(f"baseline fitted (C={base['C']:g}); training {cfg.model.arch or 'layers'} for {cfg.train.epochs} epochs…")
    ours = train_ours(cfg, Path(args.out))
    print(f"\n{'model':<42} {'test accuracy':>13} {'macro F1':>9} {'train samples/s':>16}")
    for name, row in (("TF-IDF char 1-4-grams + logistic regression", base),
                      (f"dlforge {cfg.model.arch or 'layers'} ({cfg.train.epochs} epochs)", ours)):
        print(f"{name:<42} {row['accuracy']:>13.4f} {row['f1']:>9.4f} {row['samples_per_s']:>16,.0f}")
    verdict = "≥" if ours["accuracy"] >= base["accuracy"] and ours["f1"] >= base["f1"] else "<"
    print(f"\ndlforge {verdict} baseline on accuracy and macro F1 ({ours['train_s']:.0f} s of training epochs; "
          f"run directory: {args.out})")


if __name__ == "__main__":
    main()
