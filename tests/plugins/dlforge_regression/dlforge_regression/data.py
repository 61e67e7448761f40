"""The `diabetes` data set and seeded regression splits built from dlforge's own split helpers.

dlforge's splits are stratified by class; a numeric target has none, so it is cut into quantile bins and
the bins stand in for classes: every split then covers the whole range of the target (on 442 patients a
purely random split can leave the test split without its extremes).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import ConfigDict, Field
from torch import Tensor
from torch.utils.data import TensorDataset

from dlforge.config import DataConfig, ExperimentConfig
from dlforge.data.datasets import DATASETS, DatasetEntry, Params, RawData
from dlforge.data.splits import DataBundle, channel_stats, split_indices, subsample
from dlforge.preprocessing import PluginPreprocessing

TARGET = "disease_progression"
BINS, PER_BIN = 10, 20  # at most 10 target bins, each of about 20 samples or more


class DiabetesParams(Params):
    pass


class TabularPreprocessing(PluginPreprocessing):
    """This plugin's kind of `preprocessing` (run.json, the manifest): dlforge carries it, this model types it
    (`TabularPreprocessing.of(info.preprocessing)`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["tabular"] = "tabular"
    features: list[str] = Field(description="the input columns, in order")
    target: str = Field(description="what the model predicts")
    mean: list[float] = Field(description="each feature's train-split mean (the network standardises inputs)")
    std: list[float] = Field(description="each feature's train-split standard deviation")
    target_mean: float = Field(description="the target's train-split mean (predictions are in its units)")
    target_std: float = Field(gt=0, description="the target's train-split standard deviation")


def load_diabetes_data(p: DiabetesParams, seed: int) -> RawData:
    """scikit-learn's bundled diabetes data (no download): 10 raw measurements (age, sex, BMI, blood
    pressure, six blood serum values) per patient, the target a disease progression score a year later."""
    from sklearn.datasets import load_diabetes

    found = load_diabetes(scaled=False)
    x = torch.tensor(found.data, dtype=torch.float32)
    y = torch.tensor(found.target, dtype=torch.float32)
    facts = PluginPreprocessing(kind="tabular", features=list(found.feature_names), target=TARGET)
    return RawData(x, y, [TARGET], facts)  # the split adds the statistics (regression_bundle)


def quantile_bins(y: Tensor, samples_per_bin: int = PER_BIN) -> Tensor:
    """Each target's quantile bin (0…k-1, k ≤ BINS), the stand-in classes that stratify the splits."""
    k = max(1, min(BINS, len(y) // samples_per_bin))
    edges = torch.quantile(y.double(), torch.linspace(0, 1, k + 1, dtype=torch.float64)[1:-1])
    return torch.bucketize(y.double(), edges)


def regression_bundle(raw: RawData, cfg: DataConfig, seed: int) -> DataBundle:
    """Seeded train/val/test splits stratified by target bin; input and target statistics of the train split."""
    y = raw.y.float()
    bins = quantile_bins(y)
    train_idx, val_idx, test_idx = split_indices(bins, cfg.val_fraction, cfg.test_fraction, seed)
    train_idx = subsample(train_idx, bins, cfg.train_fraction, seed)
    mean, std = channel_stats(raw.x[train_idx])
    facts = raw.preprocessing.model_dump() if raw.preprocessing is not None else {}
    prep = TabularPreprocessing(**facts, mean=mean, std=std, target_mean=float(y[train_idx].mean()),
                                target_std=float(y[train_idx].std().clamp_min(1e-6)))
    train, val, test = (TensorDataset(raw.x[i], y[i]) for i in (train_idx, val_idx, test_idx))
    return DataBundle(train, val, test, labels=raw.labels, input_shape=raw.input_shape, integer_input=False,
                      preprocessing=prep)


def load_regression_data(cfg: ExperimentConfig) -> DataBundle:
    """`cfg.data.dataset` loaded and split (the same seed, the same splits: report.py refits the baseline)."""
    entry = DATASETS.get(cfg.data.dataset)
    return regression_bundle(entry.load(entry.params.model_validate(cfg.data.params), cfg.seed), cfg.data, cfg.seed)


def register(registry: Any) -> None:
    registry.add("diabetes", DatasetEntry(DiabetesParams, load_diabetes_data,
                                          "scikit-learn's diabetes: 10 measurements → progression (442 patients)",
                                          lambda p: (10,), ("regression",)))
