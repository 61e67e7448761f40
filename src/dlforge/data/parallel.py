"""Parallel text (source → target sentence pairs) for sequence-to-sequence tasks.

Three sources, one registry: `num2words` (built in, made offline from the installed num2words
package), `parallel_tsv` (Tatoeba / Anki style `source<TAB>target` lines, or a Parquet file) and
`parallel_jsonl` (one object a line, configurable field names). Files are read through pyarrow and the
sentences stay in Arrow arrays (dlforge.data.tables). Splits are seeded; for `num2words` every number
appears once, so the test split holds numbers the model never saw in training: it measures
generalisation, not memory.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, model_validator

from dlforge.data.datasets import DataError
from dlforge.data.tables import Encoding, TextColumn, read_columns
from dlforge.registry import Registry
from dlforge.text import TokenizerConfig

Pair = tuple[str, str]


class Pairs(Sequence[Pair]):
    """Sentence pairs as two Arrow text columns (`sources`, `targets`); `pairs[i]` is one (source, target)."""

    def __init__(self, sources: TextColumn, targets: TextColumn) -> None:
        self.sources, self.targets = sources, targets

    def __len__(self) -> int:
        return len(self.sources)

    @overload
    def __getitem__(self, index: int) -> Pair: ...
    @overload
    def __getitem__(self, index: slice) -> Pairs: ...
    def __getitem__(self, index: int | slice) -> Pair | Pairs:
        if isinstance(index, slice):
            return self.take(np.arange(len(self))[index])
        return self.sources[index], self.targets[index]

    def __iter__(self) -> Iterator[Pair]:
        return zip(self.sources, self.targets, strict=True)

    def take(self, indices: Sequence[int] | np.ndarray) -> Pairs:
        return Pairs(self.sources.take(indices), self.targets.take(indices))


@dataclass(frozen=True)
class ParallelSplits:
    """Sentence pairs per split; what tokenizers are trained on (train only) and models learn from."""

    train: Pairs
    val: Pairs
    test: Pairs
    description: str = ""

    def sources(self, split: str = "train") -> TextColumn:
        return getattr(self, split).sources  # type: ignore[no-any-return]

    def targets(self, split: str = "train") -> TextColumn:
        return getattr(self, split).targets  # type: ignore[no-any-return]


class Params(BaseModel):
    """Settings every parallel dataset shares: how each side is tokenized (trained on the train split)."""

    model_config = ConfigDict(extra="forbid")

    source_tokenizer: TokenizerConfig = Field(default_factory=lambda: TokenizerConfig(kind="bpe", vocab_size=1000))
    target_tokenizer: TokenizerConfig = Field(default_factory=lambda: TokenizerConfig(kind="bpe", vocab_size=1000))
    shared_tokenizer: bool = Field(False, description="one tokenizer (source_tokenizer's settings) for both sides")


@dataclass(frozen=True)
class ParallelEntry:
    params: type[Params]
    load: Callable[[Any, int], Pairs]
    doc: str


PARALLEL: Registry[ParallelEntry] = Registry("parallel dataset")


# --- num2words: number phrases, e.g. "four hundred and twenty-one" → "quatre cent vingt et un" ----
class Num2WordsParams(Params):
    source: str = Field("en", description="'digits' or a num2words language code (en, fr, de, es, …)")
    target: str = Field("fr", description="'digits' or a num2words language code")
    max_number: int = Field(9999, ge=10, le=10**9, description="numbers are drawn from 0..max_number")
    n_samples: int = Field(6000, ge=30, description="distinct numbers in all splits together")

    @model_validator(mode="after")
    def _enough_numbers(self) -> Num2WordsParams:
        if self.n_samples > self.max_number + 1:
            raise ValueError(f"n_samples {self.n_samples} exceeds the {self.max_number + 1} distinct numbers "
                             f"0..max_number; raise max_number or lower n_samples")
        if self.source == self.target:
            raise ValueError(f"source and target are both {self.source!r}; e.g. source: en, target: fr")
        return self


def number_phrase(n: int, lang: str) -> str:
    """`n` as digits or as words in `lang` (num2words)."""
    if lang == "digits":
        return str(n)
    from num2words import num2words

    return str(num2words(n, lang=lang))


def _check_language(lang: str, key: str) -> None:
    from num2words import CONVERTER_CLASSES

    if lang != "digits" and lang not in CONVERTER_CLASSES:
        from dlforge.registry import suggest

        known = sorted(CONVERTER_CLASSES)
        raise DataError(f"data.params.{key}: unknown num2words language {lang!r}{suggest(lang, known)} "
                        f"(use 'digits' or one of: {', '.join(known)})")


def load_num2words(p: Num2WordsParams, seed: int) -> Pairs:
    """`n_samples` distinct numbers (seeded), each once: no number is in two splits."""
    _check_language(p.source, "source")
    _check_language(p.target, "target")
    numbers = random.Random(seed).sample(range(p.max_number + 1), p.n_samples)
    return Pairs(TextColumn.of(number_phrase(n, p.source) for n in numbers),
                 TextColumn.of(number_phrase(n, p.target) for n in numbers))


# --- files: TSV (or Parquet) and JSONL -------------------------------------------------------------
class FileParams(Params):
    path: Path
    encoding: Encoding = Field("utf-8", description="of the file (a UTF-8 BOM is dropped), e.g. latin-1")
    swap: bool = Field(False, description="translate target → source instead")


class TsvParams(FileParams):
    source_column: NonNegativeInt | str = Field(0, description="0-based column of the source sentence, or a "
                                                               "header name (the first line is then a header)")
    target_column: NonNegativeInt | str = Field(1, description="0-based column of the target sentence, or a "
                                                               "header name")
    delimiter: str = Field("\t", min_length=1, max_length=1, description="no quoting: '\"' is text")


class JsonlParams(FileParams):
    source_field: str = "source"
    target_field: str = "target"


def _clean(found: dict[str, TextColumn], source: str, target: str, path: Path, swap: bool) -> Pairs:
    """Both sides (found[source], found[target]) stripped; pairs with an empty side dropped."""
    sources, targets = found[source].stripped(), found[target].stripped()
    keep = np.flatnonzero(sources.non_blank() & targets.non_blank())
    if not len(keep):
        raise DataError(f"data.params.path: {path} holds no sentence pairs with both sides non-empty")
    if len(keep) < len(sources):
        sources, targets = sources.take(keep), targets.take(keep)
    return Pairs(targets, sources) if swap else Pairs(sources, targets)


def load_tsv(p: TsvParams, seed: int) -> Pairs:
    """Tab-separated lines, columns by position (no header) or by name (a header row); a .parquet file too."""
    columns = {"source_column": p.source_column, "target_column": p.target_column}
    found = read_columns(p.path, columns, p.encoding, p.delimiter, quoting=False)
    return _clean(found, "source_column", "target_column", p.path, p.swap)


def load_jsonl(p: JsonlParams, seed: int) -> Pairs:
    columns = {"source_field": p.source_field, "target_field": p.target_field}
    found = read_columns(p.path, columns, p.encoding, otherwise="jsonl")
    return _clean(found, "source_field", "target_field", p.path, p.swap)


PARALLEL.add("num2words", ParallelEntry(Num2WordsParams, load_num2words,
                                        "number phrases made offline with num2words (digits or words ↔ words)"))
PARALLEL.add("parallel_tsv", ParallelEntry(TsvParams, load_tsv, "source<TAB>target lines (Tatoeba / Anki style)"))
PARALLEL.add("parallel_jsonl", ParallelEntry(JsonlParams, load_jsonl,
                                             "one JSON object a line with source/target fields"))


# --- splits -----------------------------------------------------------------------------------------
def split_pairs(pairs: Pairs, val_fraction: float, test_fraction: float, seed: int) -> ParallelSplits:
    """Seeded random split; at least one pair in each split."""
    if len(pairs) < 3:
        raise DataError(f"data: {len(pairs)} sentence pair(s) cannot fill train, val and test splits")
    order = list(range(len(pairs)))
    random.Random(seed + 1).shuffle(order)
    n_test = max(1, round(len(pairs) * test_fraction))
    n_val = max(1, round(len(pairs) * val_fraction))
    test, val, train = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    return ParallelSplits(pairs.take(train), pairs.take(val), pairs.take(test))


def load_parallel(dataset: str, params: dict[str, Any] | Params, val_fraction: float, test_fraction: float,
                  seed: int) -> ParallelSplits:
    """Load a registered parallel dataset and split it; DataError names the offending key."""
    entry = PARALLEL.get(dataset)
    validated = params if isinstance(params, Params) else entry.params.model_validate(params)
    pairs = entry.load(validated, seed)
    splits = split_pairs(pairs, val_fraction, test_fraction, seed)
    return ParallelSplits(splits.train, splits.val, splits.test, entry.doc)
