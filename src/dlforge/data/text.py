"""Text datasets: `text_csv`, `jsonl`, `text_folder` (yours) and `langid` (built in, made offline).

Each loads raw strings and labels; `tokenize_splits` then trains the tokenizer on the train split only
(or reuses a run's tokenizer.json) and turns every text into right-padded int64 ids (pad id 0).
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from dlforge.data.datasets import DATASETS, DataError, DatasetEntry, Params, RawData
from dlforge.preprocessing import TextPreprocessing
from dlforge.text import (
    PAD_ID,
    TOKENIZER_FILE,
    TokenizerConfig,
    encode,
    tokenizer_from_bytes,
    tokenizer_to_bytes,
    train_tokenizer,
)

log = logging.getLogger(__name__)


class TextParams(Params):
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)


def labelled_texts(texts: list[str], names: list[str], tok: TokenizerConfig, where: str,
                   skipped: list[str] | None = None) -> RawData:
    """RawData of raw strings with labels by sorted class name (ids are made after the split)."""
    keep = [i for i, t in enumerate(texts) if t.strip()]
    if len(keep) < len(texts):
        log.warning("skipped %d empty texts in %s", len(texts) - len(keep), where)
    texts, names = [texts[i] for i in keep], [names[i] for i in keep]
    labels = sorted(set(names))
    if len(labels) < 2:
        raise DataError(f"{where}: needs texts of at least 2 classes, found {labels or 'none'}")
    index = {name: i for i, name in enumerate(labels)}
    y = torch.tensor([index[n] for n in names], dtype=torch.long)
    return RawData(torch.empty(0, dtype=torch.long), y, labels, None, skipped or [], texts=texts, tokenizer=tok)


def _need_file(path: Path) -> Path:
    path = path.expanduser()
    if not path.is_file():
        raise DataError(f"data.params.path: {path} is not a file")
    return path


# --- text_csv ------------------------------------------------------------------------------------
class TextCsvParams(TextParams):
    path: Path
    text_column: str = "text"
    label_column: str = "label"
    delimiter: str = Field(",", min_length=1, max_length=1)


def load_text_csv(p: TextCsvParams, seed: int) -> RawData:
    path = _need_file(p.path)
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, delimiter=p.delimiter)
        columns = reader.fieldnames or []
        for key, column in (("text_column", p.text_column), ("label_column", p.label_column)):
            if column not in columns:
                raise DataError(f"data.params.{key}: no column '{column}' in {path} (columns: {', '.join(columns)})")
        rows = [(row[p.text_column] or "", row[p.label_column] or "") for row in reader]
    return labelled_texts([t for t, _ in rows], [lb for _, lb in rows], p.tokenizer, str(path))


# --- jsonl -----------------------------------------------------------------------------------------
class JsonlParams(TextParams):
    path: Path
    text_field: str = "text"
    label_field: str = "label"


def load_jsonl(p: JsonlParams, seed: int) -> RawData:
    path = _need_file(p.path)
    texts, names = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            texts.append(str(record[p.text_field]))
            names.append(str(record[p.label_field]))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataError(f"{path}:{number}: expected a JSON object with '{p.text_field}' and "
                            f"'{p.label_field}' ({type(exc).__name__}: {exc})") from None
    return labelled_texts(texts, names, p.tokenizer, str(path))


# --- text_folder -----------------------------------------------------------------------------------
class TextFolderParams(TextParams):
    path: Path


def load_text_folder(p: TextFolderParams, seed: int) -> RawData:
    root = p.path.expanduser()
    if not root.is_dir():
        raise DataError(f"data.params.path: {root} is not a folder (expected one sub-folder per class)")
    texts, names, skipped = [], [], []
    for folder in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")):
        for file in sorted(folder.glob("*.txt")):
            try:
                texts.append(file.read_text(encoding="utf-8").strip())
                names.append(folder.name)
            except UnicodeDecodeError as exc:
                skipped.append(f"{file}: not UTF-8 ({exc.reason})")
    for line in skipped:
        log.warning("skipped %s", line)
    return labelled_texts(texts, names, p.tokenizer, str(root), skipped)


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
    return labelled_texts(texts, names, p.tokenizer, "langid")


# --- ids for every split, the tokenizer from the train split only ----------------------------------
def tokenize_splits(raw: RawData, train_idx: Tensor, reuse: Path | None) -> RawData:
    """`raw` with x = right-padded ids, preprocessing that says how, and tokenizer.json as an artifact."""
    assert raw.texts is not None and raw.tokenizer is not None  # only text datasets come here
    cfg = raw.tokenizer
    saved = reuse / TOKENIZER_FILE if reuse is not None else None
    if saved is not None and saved.is_file():
        tok = tokenizer_from_bytes(saved.read_bytes(), str(saved))
    else:
        tok = train_tokenizer([raw.texts[i] for i in train_idx.tolist()], cfg)
    ids, _ = encode(tok, raw.texts, cfg.max_length, truncate=True)
    # every sample is max_length wide, so models sized from the input (positions) take any request the
    # server accepts; training and evaluation cut each batch to its longest text (tasks/classification.py)
    ids = np.pad(ids, [(0, 0), (0, cfg.max_length - ids.shape[1])], constant_values=PAD_ID)
    prep = TextPreprocessing(tokenizer=TOKENIZER_FILE, tokenizer_kind=cfg.kind, vocab_size=tok.get_vocab_size(),
                             max_length=cfg.max_length, lowercase=cfg.lowercase, pad_id=PAD_ID,
                             space_id=tok.token_to_id(" "))  # char tokenizers keep spaces (None: no such token)
    return RawData(torch.from_numpy(ids), raw.y, raw.labels, prep, raw.skipped,
                   artifacts={TOKENIZER_FILE: tokenizer_to_bytes(tok)})


def _text_shape(p: TextParams) -> tuple[int, ...]:
    return (p.tokenizer.max_length,)


DATASETS.add("text_csv", DatasetEntry(TextCsvParams, load_text_csv, "CSV file: a text and a label column",
                                      _text_shape))
DATASETS.add("jsonl", DatasetEntry(JsonlParams, load_jsonl, "JSON lines: a text and a label field", _text_shape))
DATASETS.add("text_folder", DatasetEntry(TextFolderParams, load_text_folder, "path/<class>/<text>.txt files",
                                         _text_shape))
DATASETS.add("langid", DatasetEntry(LangIdParams, load_langid,
                                    "language of short phrases (8 languages, from wordfreq, offline)", _text_shape))
