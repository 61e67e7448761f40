"""Seeded stratified train/val/test splits and train-split normalisation statistics."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from sklearn.model_selection import train_test_split
from torch import Tensor
from torch.utils.data import TensorDataset

from dlforge.config import DataConfig
from dlforge.data.datasets import DATASETS, DataError, RawData


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


def split_indices(y: Tensor, val: float, test: float, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """Stratified so every split keeps the class balance; the same seed gives the same split."""
    idx = torch.arange(len(y)).numpy()
    labels = y.numpy()
    try:
        rest, test_idx = train_test_split(idx, test_size=test, stratify=labels, random_state=seed)
        train_idx, val_idx = train_test_split(
            rest, test_size=val / (1 - test), stratify=labels[rest], random_state=seed)
    except ValueError as exc:
        raise DataError(f"data: cannot split {len(y)} samples into train/val/test by class: {exc}") from None
    return tuple(torch.from_numpy(i).sort().values for i in (train_idx, val_idx, test_idx))  # type: ignore[return-value]


def channel_stats(x: Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean/std over the train split (per feature for flat inputs)."""
    dims = [0, *range(2, x.dim())] if x.dim() >= 3 else [0]
    std = x.std(dim=dims).clamp_min(1e-6)
    return x.mean(dim=dims).flatten().tolist(), std.flatten().tolist()


def make_bundle(raw: RawData, cfg: DataConfig, seed: int, reuse: Path | None = None) -> DataBundle:
    train_idx, val_idx, test_idx = split_indices(raw.y, cfg.val_fraction, cfg.test_fraction, seed)
    if raw.texts is not None:  # the tokenizer learns from the train split only
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
