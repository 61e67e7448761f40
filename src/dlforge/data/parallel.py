"""Parallel text (source → target sentence pairs) for sequence-to-sequence tasks.

Three sources, one registry: `num2words` (built in, made offline from the installed num2words
package), `tsv` (Tatoeba / Anki style `source<TAB>target` lines) and `jsonl` (one object a line,
configurable field names). Splits are seeded; for `num2words` every number appears once, so the
test split holds numbers the model never saw in training: it measures generalisation, not memory.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dlforge.data.datasets import DataError
from dlforge.registry import Registry
from dlforge.text import TokenizerConfig

Pair = tuple[str, str]


@dataclass(frozen=True)
class ParallelSplits:
    """Sentence pairs per split; what tokenizers are trained on (train only) and models learn from."""

    train: list[Pair]
    val: list[Pair]
    test: list[Pair]
    description: str = ""

    def sources(self, split: str = "train") -> list[str]:
        return [s for s, _ in getattr(self, split)]

    def targets(self, split: str = "train") -> list[str]:
        return [t for _, t in getattr(self, split)]


class Params(BaseModel):
    """Settings every parallel dataset shares: how each side is tokenized (trained on the train split)."""

    model_config = ConfigDict(extra="forbid")

    source_tokenizer: TokenizerConfig = Field(default_factory=lambda: TokenizerConfig(kind="bpe", vocab_size=1000))
    target_tokenizer: TokenizerConfig = Field(default_factory=lambda: TokenizerConfig(kind="bpe", vocab_size=1000))
    shared_tokenizer: bool = Field(False, description="one tokenizer (source_tokenizer's settings) for both sides")


@dataclass(frozen=True)
class ParallelEntry:
    params: type[Params]
    load: Callable[[Any, int], list[Pair]]
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


def load_num2words(p: Num2WordsParams, seed: int) -> list[Pair]:
    """`n_samples` distinct numbers (seeded), each once: no number is in two splits."""
    _check_language(p.source, "source")
    _check_language(p.target, "target")
    numbers = random.Random(seed).sample(range(p.max_number + 1), p.n_samples)
    return [(number_phrase(n, p.source), number_phrase(n, p.target)) for n in numbers]


# --- files: TSV and JSONL ---------------------------------------------------------------------------
class TsvParams(Params):
    path: Path
    source_column: int = Field(0, ge=0, description="0-based column of the source sentence")
    target_column: int = Field(1, ge=0, description="0-based column of the target sentence")
    swap: bool = Field(False, description="translate target → source instead")


class JsonlParams(Params):
    path: Path
    source_field: str = "source"
    target_field: str = "target"
    swap: bool = False


def _lines(path: Path) -> list[str]:
    path = path.expanduser()
    if not path.is_file():
        raise DataError(f"data.params.path: {path} is not a file")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"data.params.path: {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _clean(pairs: list[Pair], path: Path, swap: bool) -> list[Pair]:
    kept = [(s.strip(), t.strip()) for s, t in pairs if s.strip() and t.strip()]
    if not kept:
        raise DataError(f"data.params.path: {path} holds no sentence pairs with both sides non-empty")
    return [(t, s) for s, t in kept] if swap else kept


def load_tsv(p: TsvParams, seed: int) -> list[Pair]:
    pairs = []
    need = max(p.source_column, p.target_column) + 1
    for number, line in enumerate(_lines(p.path), start=1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) < need:
            raise DataError(f"{p.path}:{number}: {len(cols)} tab-separated column(s), need {need} "
                            f"(source column {p.source_column}, target column {p.target_column})")
        pairs.append((cols[p.source_column], cols[p.target_column]))
    return _clean(pairs, p.path, p.swap)


def load_jsonl(p: JsonlParams, seed: int) -> list[Pair]:
    pairs = []
    for number, line in enumerate(_lines(p.path), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{p.path}:{number}: not valid JSON ({exc.msg})") from None
        missing = [f for f in (p.source_field, p.target_field) if not isinstance(row, dict) or f not in row]
        if missing:
            raise DataError(f"{p.path}:{number}: no field {missing[0]!r} (set data.params.source_field / "
                            f"target_field to the names your file uses)")
        pairs.append((str(row[p.source_field]), str(row[p.target_field])))
    return _clean(pairs, p.path, p.swap)


PARALLEL.add("num2words", ParallelEntry(Num2WordsParams, load_num2words,
                                        "number phrases made offline with num2words (digits or words ↔ words)"))
PARALLEL.add("parallel_tsv", ParallelEntry(TsvParams, load_tsv, "source<TAB>target lines (Tatoeba / Anki style)"))
PARALLEL.add("parallel_jsonl", ParallelEntry(JsonlParams, load_jsonl,
                                             "one JSON object a line with source/target fields"))


# --- splits -----------------------------------------------------------------------------------------
def split_pairs(pairs: list[Pair], val_fraction: float, test_fraction: float, seed: int) -> ParallelSplits:
    """Seeded random split; at least one pair in each split."""
    if len(pairs) < 3:
        raise DataError(f"data: {len(pairs)} sentence pair(s) cannot fill train, val and test splits")
    order = list(range(len(pairs)))
    random.Random(seed + 1).shuffle(order)
    n_test = max(1, round(len(pairs) * test_fraction))
    n_val = max(1, round(len(pairs) * val_fraction))
    test, val, train = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    pick = lambda idx: [pairs[i] for i in idx]
    return ParallelSplits(pick(train), pick(val), pick(test))


def load_parallel(dataset: str, params: dict[str, Any] | Params, val_fraction: float, test_fraction: float,
                  seed: int) -> ParallelSplits:
    """Load a registered parallel dataset and split it; DataError names the offending key."""
    entry = PARALLEL.get(dataset)
    validated = params if isinstance(params, Params) else entry.params.model_validate(params)
    pairs = entry.load(validated, seed)
    splits = split_pairs(pairs, val_fraction, test_fraction, seed)
    return ParallelSplits(splits.train, splits.val, splits.test, entry.doc)

