"""Text datasets: `text_csv` (CSV, TSV or Parquet), `jsonl`, `text_folder` (yours) and `langid` (built in).

Each loads raw strings (in Arrow, dlforge.data.tables) and labels; after the split `tokenize_splits` trains
the tokenizer on the train split only (or reuses a run's tokenizer.json), and each sample is tokenized when
a loader asks for it (`TokenizedTexts`): right-padded int64 ids of max_length (pad id 0).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from pydantic import Field
from tokenizers import Tokenizer
from torch import Tensor
from torch.utils.data import Dataset

from dlforge.data.datasets import DATASETS, DataError, DatasetEntry, Params, RawData
from dlforge.data.tables import Encoding, TextColumn, python_codec, read_columns
from dlforge.preprocessing import TextPreprocessing
from dlforge.text import (
    PAD_ID,
    TOKENIZER_FILE,
    TokenizerConfig,
    padded_ids,
    tokenizer_from_bytes,
    tokenizer_to_bytes,
    train_tokenizer,
)

log = logging.getLogger(__name__)


class TextParams(Params):
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)


class FileParams(TextParams):
    path: Path
    encoding: Encoding = Field("utf-8", description="of the file (a UTF-8 BOM is dropped), e.g. latin-1, cp1252")


def labelled_texts(texts: TextColumn, names: TextColumn, tok: TokenizerConfig, where: str,
                   skipped: list[str] | None = None) -> RawData:
    """RawData of raw strings with labels by sorted class name (ids are made after the split)."""
    keep = texts.non_blank()
    if not keep.all():
        log.warning("skipped %d empty texts in %s", int((~keep).sum()), where)
        kept = np.flatnonzero(keep)
        texts, names = texts.take(kept), names.take(kept)
    labels = sorted(names.array.unique().to_pylist())
    if len(labels) < 2:
        raise DataError(f"{where}: needs texts of at least 2 classes, found {labels or 'none'}")
    y = torch.from_numpy(names.codes(labels))
    return RawData(torch.empty(0, dtype=torch.long), y, labels, None, skipped or [], texts=texts, tokenizer=tok)


# --- text_csv ------------------------------------------------------------------------------------
class TextCsvParams(FileParams):
    text_column: str = "text"
    label_column: str = "label"
    delimiter: str | None = Field(None, min_length=1, max_length=1,
                                  description="default: sniffed from the first lines (, ; TAB |)")


def load_text_csv(p: TextCsvParams, seed: int) -> RawData:
    """A CSV or TSV file with a header row (a .parquet or .jsonl path is read as such)."""
    found = read_columns(p.path, {"text_column": p.text_column, "label_column": p.label_column}, p.encoding,
                         p.delimiter)
    return labelled_texts(found["text_column"], found["label_column"], p.tokenizer, str(p.path))


# --- jsonl -----------------------------------------------------------------------------------------
class JsonlParams(FileParams):
    text_field: str = "text"
    label_field: str = "label"


def load_jsonl(p: JsonlParams, seed: int) -> RawData:
    """One JSON object a line (a .parquet path is read as Parquet, by field names)."""
    found = read_columns(p.path, {"text_field": p.text_field, "label_field": p.label_field}, p.encoding,
                         otherwise="jsonl")
    return labelled_texts(found["text_field"], found["label_field"], p.tokenizer, str(p.path))


# --- text_folder -----------------------------------------------------------------------------------
class TextFolderParams(FileParams):
    pass


def load_text_folder(p: TextFolderParams, seed: int) -> RawData:
    root = p.path.expanduser()
    if not root.is_dir():
        raise DataError(f"data.params.path: {root} is not a folder (expected one sub-folder per class)")
    names: list[str] = []
    skipped: list[str] = []

    def texts() -> Iterator[str]:
        for folder in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")):
            for file in sorted(folder.glob("*.txt")):
                try:
                    text = file.read_text(encoding=python_codec(p.encoding)).strip()
                except UnicodeDecodeError as exc:
                    skipped.append(f"{file}: not {p.encoding} ({exc.reason}; set data.params.encoding)")
                    continue
                names.append(folder.name)
                yield text

    column = TextColumn.of(texts())
    for line in skipped:
        log.warning("skipped %s", line)
    return labelled_texts(column, TextColumn.of(names), p.tokenizer, str(root), skipped)


# --- langid: short phrases in 8 languages from wordfreq's word lists (no download) -------------------
LANGUAGES = ["de", "en", "es", "fr", "it", "nl", "pt", "sv"]


class LangIdParams(TextParams):
    languages: list[str] = Field(default_factory=lambda: list(LANGUAGES), min_length=2)
    per_language: int = Field(1000, ge=10, description="phrases per language")
    vocabulary: int = Field(3000, ge=10, description="the most frequent words of each language to draw from")
    min_words: int = Field(1, ge=1)
    max_words: int = Field(6, ge=1)


def _word_list(language: str, size: int) -> tuple[list[str], np.ndarray]:
    """The `size` most frequent words of `language` and their frequencies (wordfreq's bucketed list)."""
    import wordfreq

    try:
        buckets = wordfreq.get_frequency_list(language, wordlist="small")
    except LookupError:
        raise DataError(f"data.params.languages: wordfreq has no word list for '{language}'") from None
    words, freqs = [], []
    for index, bucket in enumerate(buckets):  # bucket i holds words of frequency 10^(-i/100)
        words += bucket
        freqs += [10 ** (-index / 100)] * len(bucket)
        if len(words) >= size:
            break
    return words[:size], np.array(freqs[:size]) / sum(freqs[:size])


def load_langid(p: LangIdParams, seed: int) -> RawData:
    """Seeded phrases of min..max words drawn by frequency: a small, real language-identification task."""
    if p.max_words < p.min_words:
        raise DataError("data.params.max_words must be at least min_words")
    rng = np.random.default_rng(seed)
    texts, names = [], []
    for language in p.languages:
        words, freqs = _word_list(language, p.vocabulary)
        counts = rng.integers(p.min_words, p.max_words + 1, size=p.per_language)
        for count in counts:
            texts.append(" ".join(words[i] for i in rng.choice(len(words), size=count, p=freqs)))
            names.append(language)
    return labelled_texts(TextColumn.of(texts), TextColumn.of(names), p.tokenizer, "langid")


# --- ids for every split, the tokenizer from the train split only ----------------------------------
class TokenizedTexts(Dataset[tuple[Tensor, int]]):
    """Texts with a class index each, tokenized when a loader asks (in its workers): right-padded int64 ids
    of `max_length` — every sample as wide as the longest request the server accepts, so models sized from
    the input (positions) fit; training and evaluation cut each batch to its longest text
    (tasks/classification). A batch is tokenized at once (`__getitems__`: one encode_batch)."""

    def __init__(self, texts: TextColumn, targets: Tensor, tokenizer: Tokenizer, max_length: int) -> None:
        self.texts, self.targets = texts, targets.numpy()
        self.tokenizer, self.max_length = tokenizer, max_length

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Tensor, int]]:
        ids = padded_ids(self.tokenizer, self.texts.at(indices), self.max_length)
        return [(torch.from_numpy(row), int(self.targets[i])) for row, i in zip(ids, indices, strict=True)]


def tokenize_splits(raw: RawData, train_idx: Tensor, reuse: Path | None) -> RawData:
    """`raw` as lazily tokenized samples, preprocessing that says how, and tokenizer.json as an artifact."""
    assert raw.texts is not None and raw.tokenizer is not None  # only text datasets come here
    cfg = raw.tokenizer
    saved = reuse / TOKENIZER_FILE if reuse is not None else None
    if saved is not None and saved.is_file():
        tok = tokenizer_from_bytes(saved.read_bytes(), str(saved))
    else:  # a stream of the train texts, never a list of them
        tok = train_tokenizer(raw.texts.iter(train_idx.numpy()), cfg)
    prep = TextPreprocessing(tokenizer=TOKENIZER_FILE, tokenizer_kind=cfg.kind, vocab_size=tok.get_vocab_size(),
                             max_length=cfg.max_length, lowercase=cfg.lowercase, pad_id=PAD_ID,
                             space_id=tok.token_to_id(" "))  # char tokenizers keep spaces (None: no such token)
    samples = TokenizedTexts(raw.texts, raw.y, tok, cfg.max_length)
    return RawData(torch.empty(0, dtype=torch.long), raw.y, raw.labels, prep, raw.skipped,
                   artifacts={TOKENIZER_FILE: tokenizer_to_bytes(tok)}, samples=samples,
                   sample_shape=(cfg.max_length,), sample_dtype=torch.long)


def _text_shape(p: TextParams) -> tuple[int, ...]:
    return (p.tokenizer.max_length,)


DATASETS.add("text_csv", DatasetEntry(TextCsvParams, load_text_csv,
                                      "CSV, TSV or Parquet file: a text and a label column", _text_shape))
DATASETS.add("jsonl", DatasetEntry(JsonlParams, load_jsonl, "JSON lines (or Parquet): a text and a label field",
                                   _text_shape))
DATASETS.add("text_folder", DatasetEntry(TextFolderParams, load_text_folder, "path/<class>/<text>.txt files",
                                         _text_shape))
DATASETS.add("langid", DatasetEntry(LangIdParams, load_langid,
                                    "language of short phrases (8 languages, from wordfreq, offline)", _text_shape))
