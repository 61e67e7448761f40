"""Seeded stratified train/val/test splits and train-split normalisation statistics."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from sklearn.model_selection import train_test_split
from torch import Tensor
from torch.utils.data import TensorDataset

from dlforge.config import DataConfig
from dlforge.data.datasets import DATASETS, DataError, RawData

MIN_PER_CLASS = 3


@dataclass
class DataBundle:
    """Everything training, evaluation and export need to know about the data."""

    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    labels: list[str]
    input_shape: tuple[int, ...]
    integer_input: bool
    preprocessing: dict[str, Any]  # how raw inputs become model inputs, incl. mean/std
    artifacts: dict[str, bytes] = field(default_factory=dict)  # files the run and the package keep (tokenizer.json)

    @property
    def num_classes(self) -> int:
        return len(self.labels)


def split_indices(y: Tensor, val: float, test: float, seed: int,
                  labels: list[str] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Stratified so every split keeps the class balance; the same seed gives the same split."""
    idx = torch.arange(len(y)).numpy()
    classes = y.numpy()
    try:
        rest, test_idx = train_test_split(idx, test_size=test, stratify=classes, random_state=seed)
        train_idx, val_idx = train_test_split(
            rest, test_size=val / (1 - test), stratify=classes[rest], random_state=seed)
    except ValueError as exc:
        raise DataError(f"data: cannot split {len(y)} samples into train/val/test by class: "
                        f"{_too_small(y, labels) or exc}") from None
    return tuple(torch.from_numpy(i).sort().values for i in (train_idx, val_idx, test_idx))  # type: ignore[return-value]


def _too_small(y: Tensor, labels: list[str] | None) -> str:
    """The classes (by name, e.g. an image folder) with too few samples for three splits, or ''."""
    counts = torch.bincount(y, minlength=len(labels) if labels else 0).tolist()
    small = [f"'{labels[c] if labels else c}' has {n}" for c, n in enumerate(counts) if n < MIN_PER_CLASS]
    if not small:
        return ""
    return (f"class {', '.join(small)} sample(s); each class needs at least {MIN_PER_CLASS} "
            "(one for each of train, val and test) — add samples or drop the class")


def channel_stats(x: Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean/std over the train split (per feature for flat inputs)."""
    dims = [0, *range(2, x.dim())] if x.dim() >= 3 else [0]
    std = x.std(dim=dims).clamp_min(1e-6)
    return x.mean(dim=dims).flatten().tolist(), std.flatten().tolist()


def select_classes(raw: RawData, classes: list[str] | None) -> RawData:
    """Only the samples of `classes` (data.classes), relabelled 0..n-1 in that order."""
    if classes is None:
        return raw
    unknown = [c for c in classes if c not in raw.labels]
    if unknown or len(set(classes)) != len(classes):
        raise DataError(f"data.classes: {unknown or classes} — each must be one of this dataset's labels, "
                        f"once ({', '.join(raw.labels[:20])})")
    old = torch.tensor([raw.labels.index(c) for c in classes])
    keep = torch.isin(raw.y, old)
    remap = torch.full((len(raw.labels),), -1, dtype=torch.long)
    remap[old] = torch.arange(len(classes))
    texts = None if raw.texts is None else [t for t, k in zip(raw.texts, keep.tolist(), strict=True) if k]
    x = raw.x if texts is not None else raw.x[keep]  # text: ids come after the split (tokenize_splits)
    return replace(raw, x=x, y=remap[raw.y[keep]], labels=list(classes), texts=texts)


def subsample(idx: Tensor, y: Tensor, fraction: float, seed: int) -> Tensor:
    """A seeded, stratified share of the train split (data.train_fraction: few-label fine-tuning)."""
    if fraction >= 1:
        return idx
    try:
        kept, _ = train_test_split(idx.numpy(), train_size=fraction, stratify=y[idx].numpy(), random_state=seed)
    except ValueError as exc:
        raise DataError(f"data.train_fraction: {fraction} of {len(idx)} training samples leaves too few per "
                        f"class: {exc}") from None
    return torch.from_numpy(kept).sort().values


def make_bundle(raw: RawData, cfg: DataConfig, seed: int, reuse: Path | None = None) -> DataBundle:
    raw = select_classes(raw, cfg.classes)
    train_idx, val_idx, test_idx = split_indices(raw.y, cfg.val_fraction, cfg.test_fraction, seed, raw.labels)
    train_idx = subsample(train_idx, raw.y, cfg.train_fraction, seed)
    if raw.texts is not None:  # the tokenizer learns from the (kept) train split only
        from dlforge.data.text import tokenize_splits

        raw = tokenize_splits(raw, train_idx, reuse)
    prep = dict(raw.preprocessing)
    if not raw.integer_input:
        prep["mean"], prep["std"] = channel_stats(raw.x[train_idx])
    train, val, test = (TensorDataset(raw.x[i], raw.y[i]) for i in (train_idx, val_idx, test_idx))
    return DataBundle(train, val, test, labels=raw.labels, input_shape=raw.input_shape,
                      integer_input=raw.integer_input, preprocessing=prep, artifacts=raw.artifacts)


def load_data(cfg: DataConfig, seed: int, reuse: Path | None = None) -> DataBundle:
    """Load `cfg.dataset` and split it; raises DataError with the offending key on bad data.

    `reuse`: a run directory whose artifacts (e.g. a trained tokenizer) are used as they are."""
    entry = DATASETS.get(cfg.dataset)
    params = entry.params.model_validate(cfg.params)
    return make_bundle(entry.load(params, seed), cfg, seed, reuse)


def peek_input_shape(cfg: DataConfig) -> tuple[int, ...]:
    """The input shape implied by the data settings, without loading any sample."""
    entry = DATASETS.get(cfg.dataset)
    return entry.shape(entry.params.model_validate(cfg.params))
