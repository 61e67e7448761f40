"""Seeded train/val/test splits (stratified by class, or by group such as speaker) and train-split
normalisation statistics."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import GroupShuffleSplit, train_test_split
from torch import Tensor
from torch.utils.data import Dataset

from dlforge.config import DataConfig
from dlforge.data.datasets import DATASETS, DataError, RawData
from dlforge.data.samples import resolve_workers, streaming_stats, subset
from dlforge.preprocessing import (
    ImagePreprocessing,
    PluginPreprocessing,
    Preprocessing,
    TensorPreprocessing,
    TokensPreprocessing,
    parse_preprocessing,
)

MIN_PER_CLASS = 3


@dataclass
class DataBundle:
    """Everything training, evaluation and export need to know about the data."""

    train: Dataset[Any]  # (input, label) samples: tensors in memory, or read lazily (dlforge.data.samples)
    val: Dataset[Any]
    test: Dataset[Any]
    labels: list[str]
    input_shape: tuple[int, ...]
    integer_input: bool
    preprocessing: Preprocessing  # how raw inputs become model inputs, incl. mean/std
    split_groups: dict[str, list[str]] | None = None  # split name → its groups (speakers), when split by group
    artifacts: dict[str, bytes] = field(default_factory=dict)  # files the run and the package keep (tokenizer.json)
    facts: dict[str, Any] = field(default_factory=dict)  # how the data was split and measured (run.json "data")

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


def group_split_indices(groups: list[str], val: float, test: float, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """Whole groups (e.g. speakers) go to one split each, so test measures unseen speakers; seeded."""
    codes = np.unique(np.asarray(groups), return_inverse=True)[1]
    n_groups = int(codes.max()) + 1
    if n_groups < 3 or min(val, test) * n_groups < 1:
        need = max(3, int(np.ceil(1 / min(val, test))))
        raise DataError(f"data.params.group_by: {n_groups} group(s) found, but a split by group with "
                        f"val_fraction={val} and test_fraction={test} needs at least {need}")
    idx = np.arange(len(groups))
    inner = GroupShuffleSplit(1, test_size=val / (1 - test), random_state=seed)
    try:
        rest, test_idx = next(GroupShuffleSplit(1, test_size=test, random_state=seed).split(idx, groups=codes))
        train_pos, val_pos = next(inner.split(rest, groups=codes[rest]))
    except ValueError as exc:
        raise DataError(f"data.params.group_by: cannot split {n_groups} groups into train/val/test: {exc}") from None
    return tuple(torch.from_numpy(np.sort(i)) for i in (rest[train_pos], rest[val_pos], test_idx))  # type: ignore[return-value]


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
    texts = None if raw.texts is None else raw.texts.take(keep.nonzero().flatten().numpy())
    lazy = texts is not None or raw.samples is not None  # text: ids come after the split (tokenize_splits)
    x = raw.x if lazy else raw.x[keep]
    groups = None if raw.groups is None else [g for g, k in zip(raw.groups, keep.tolist(), strict=True) if k]
    samples = None if raw.samples is None else Relabelled(raw.samples, keep.nonzero().flatten(), remap)
    keys = None if raw.keys is None else [k for k, kept in zip(raw.keys, keep.tolist(), strict=True) if kept]
    given = None if raw.given_split is None else raw.given_split[keep.numpy()]
    return replace(raw, x=x, y=remap[raw.y[keep]], labels=list(classes), texts=texts, groups=groups,
                   samples=samples, keys=keys, given_split=given)


class Relabelled(Dataset[Any]):
    """The samples at `indices` of a lazy dataset, their labels mapped through `remap` (data.classes)."""

    def __init__(self, samples: Dataset[Any], indices: Tensor, remap: Tensor) -> None:
        self.samples, self.indices, self.remap = samples, indices.numpy(), remap.tolist()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        x, y = self.samples[int(self.indices[index])]
        return x, self.remap[int(y)]


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


def keep_train_groups(groups: list[str] | None, splits: tuple[Tensor, Tensor, Tensor], wanted: int | list[str],
                      seed: int) -> Tensor:
    """The train indices of only `wanted` groups of the train split (data.train_groups): N drawn (seeded),
    or the groups named."""
    if groups is None:
        raise DataError("data.train_groups: this data has no groups; name each sample's group with "
                        "data.params.group_by (spoken digits: '^(.+?)__')")
    train_idx = splits[0]
    present = sorted({groups[i] for i in train_idx.tolist()})
    if isinstance(wanted, int):
        if wanted > len(present):
            raise DataError(f"data.train_groups: {wanted} groups asked for, but the train split holds "
                            f"{len(present)}; lower it, or lower data.val_fraction / data.test_fraction")
        keep = {present[i] for i in np.random.default_rng(seed).choice(len(present), size=wanted, replace=False)}
    else:
        where = {groups[i]: name for name, idx in (("val", splits[1]), ("test", splits[2])) for i in idx.tolist()}
        wrong = [f"{g!r} ({'in the ' + where[g] + ' split' if g in where else 'no such group'})"
                 for g in wanted if g not in present]
        if wrong:
            shown = ", ".join(present[:12]) + (", …" if len(present) > 12 else "")
            raise DataError(f"data.train_groups: {', '.join(wrong)}; the train split's groups are {shown}")
        keep = set(wanted)
    return train_idx[torch.tensor([groups[i] in keep for i in train_idx.tolist()], dtype=torch.bool)]


def hash_split_indices(keys: Sequence[str], val: float, test: float, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """Each key (a file, or its group) lands in a split by a hash of (seed, key): a sample keeps its split
    when data is added or removed, and nothing needs to be held but the keys."""
    def position(key: str) -> float:
        digest = hashlib.blake2b(f"{seed}\0{key}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    where = np.array([position(k) for k in keys])
    test_mask, val_mask = where < test, (where >= test) & (where < test + val)
    return tuple(torch.from_numpy(np.flatnonzero(m)) for m in (~(test_mask | val_mask), val_mask, test_mask))  # type: ignore[return-value]


def given_split_indices(raw: RawData, cfg: DataConfig, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """Split folders as they are; a missing val or test split is carved from train (stratified, seeded)."""
    assert raw.given_split is not None
    split = torch.from_numpy(raw.given_split.astype(np.int64))
    train, val, test = ((split == s).nonzero().flatten() for s in (0, 1, 2))
    for name, fraction, part in (("val", cfg.val_fraction, val), ("test", cfg.test_fraction, test)):
        if len(part):
            continue
        try:
            keep, carved = train_test_split(train.numpy(), test_size=fraction, stratify=raw.y[train].numpy(),
                                            random_state=seed)
        except ValueError as exc:
            raise DataError(f"data: no {name}/ folder, and {len(train)} training samples cannot give a "
                            f"{name} split of {fraction}: {_too_small(raw.y[train], raw.labels) or exc}") from None
        train, carved_t = torch.from_numpy(np.sort(keep)), torch.from_numpy(np.sort(carved))
        val, test = (carved_t, test) if name == "val" else (val, carved_t)
    if not len(train):
        raise DataError("data.params.path: the train/ folder holds no samples")
    return train, val, test


def choose_split(raw: RawData, cfg: DataConfig, seed: int) -> tuple[tuple[Tensor, Tensor, Tensor], str]:
    """(train, val, test indices) and how they were chosen: split folders, a hash, by group or stratified."""
    if raw.given_split is not None:
        return given_split_indices(raw, cfg, seed), "folders"
    if cfg.split == "hash":
        keys = raw.groups or raw.keys or [str(i) for i in range(len(raw.y))]  # a group stays together
        return hash_split_indices(keys, cfg.val_fraction, cfg.test_fraction, seed), "hash"
    if raw.groups is not None:
        return group_split_indices(raw.groups, cfg.val_fraction, cfg.test_fraction, seed), "groups"
    return split_indices(raw.y, cfg.val_fraction, cfg.test_fraction, seed, raw.labels), "stratified"


def make_bundle(raw: RawData, cfg: DataConfig, seed: int, reuse: Path | None = None) -> DataBundle:
    raw = select_classes(raw, cfg.classes)
    (train_idx, val_idx, test_idx), method = choose_split(raw, cfg, seed)
    for name, idx in (("train", train_idx), ("val", val_idx), ("test", test_idx)):
        if not len(idx):
            raise DataError(f"data: the {name} split is empty ({len(raw.y)} samples, split {method}); add data "
                            f"or raise data.{name}_fraction")
    train_groups = None
    if cfg.train_groups is not None:
        train_groups = len({raw.groups[i] for i in train_idx.tolist()}) if raw.groups else 0
        train_idx = keep_train_groups(raw.groups, (train_idx, val_idx, test_idx), cfg.train_groups, seed)
    train_idx = subsample(train_idx, raw.y, cfg.train_fraction, seed)
    if raw.texts is not None:  # the tokenizer learns from the (kept) train split only
        from dlforge.data.text import tokenize_splits

        raw = tokenize_splits(raw, train_idx, reuse)
    prep = _preprocessing(raw, cfg.dataset)
    groups = None if raw.groups is None else {
        name: sorted({raw.groups[i] for i in idx.tolist()})
        for name, idx in (("train", train_idx), ("val", val_idx), ("test", test_idx))}
    facts: dict[str, Any] = {"split": {"method": method, "train": len(train_idx), "val": len(val_idx),
                                       "test": len(test_idx)}}
    if groups is not None:
        facts["split"]["groups"] = {name: len(members) for name, members in groups.items()}
        facts["split"]["group_names"] = groups
        if train_groups is not None:
            facts["split"]["train_groups_of"] = train_groups  # how many the train split held before train_groups
    if raw.labels and raw.y.numel():
        facts["class_counts"] = {name: torch.bincount(raw.y[idx], minlength=len(raw.labels)).tolist()
                                 for name, idx in (("train", train_idx), ("val", val_idx), ("test", test_idx))}
    samples = raw.dataset()
    # waveforms have no statistics: the model's front-end layer scales them
    if not raw.integer_input and isinstance(prep, ImagePreprocessing | TensorPreprocessing | PluginPreprocessing):
        if raw.samples is None:
            mean, std = channel_stats(raw.x[train_idx])
        else:
            mean, std, used = streaming_stats(samples, train_idx, seed, resolve_workers(cfg.workers, samples))
            facts["statistics_samples"] = used
        prep = prep.model_copy(update={"mean": mean, "std": std})
    train, val, test = (subset(samples, i) for i in (train_idx, val_idx, test_idx))
    return DataBundle(train, val, test, labels=raw.labels, input_shape=raw.input_shape,
                      integer_input=raw.integer_input, preprocessing=prep, split_groups=groups,
                      artifacts=raw.artifacts, facts=facts)


def _preprocessing(raw: RawData, dataset: str) -> Preprocessing:
    """The dataset's preprocessing, checked (a plugin may give a dict); plain tensors or ids if it gives none."""
    if raw.preprocessing:
        return parse_preprocessing(raw.preprocessing, f"data.dataset '{dataset}': preprocessing")
    if raw.integer_input:
        return TokensPreprocessing()
    return TensorPreprocessing(shape=list(raw.input_shape))


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
