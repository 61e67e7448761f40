"""Parallel text → tokenizers (trained on the train split) → pairs tokenized when a loader asks.

The target tokenizer gets [BOS] and [EOS]; targets are `[BOS] ids [EOS]` right-padded with [PAD] (id 0),
so `tgt[:, :-1]` is the decoder input and `tgt[:, 1:]` what it must predict. Every sample is padded to the
longest a side may be (max_length, + 2 for the target); training, evaluation and export cut each batch to
its longest sentence (task.trim). Both tokenizers travel as artifacts: the run directory and the package
keep them, hashed.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import Tensor
from torch.utils.data import Dataset

from dlforge.config import ExperimentConfig
from dlforge.data.datasets import DataError
from dlforge.data.parallel import PARALLEL, Pairs, Params, load_parallel
from dlforge.data.splits import DataBundle
from dlforge.preprocessing import TranslationPreprocessing
from dlforge.text import (
    PAD_ID,
    TokenizerConfig,
    encode,
    padded_ids,
    tokenizer_from_bytes,
    tokenizer_to_bytes,
    train_tokenizer,
)

BOS, EOS = "[BOS]", "[EOS]"
SOURCE_FILE, TARGET_FILE = "source_tokenizer.json", "target_tokenizer.json"


def _train(texts: Iterable[str], cfg: TokenizerConfig, target: bool) -> Tokenizer:
    tok = train_tokenizer(texts, cfg)
    if target:
        tok.add_special_tokens([BOS, EOS])  # appended after the vocabulary: ids vocab, vocab + 1
    return tok


def _reuse(run_dir: Path, name: str) -> Tokenizer:
    path = run_dir / name
    if not path.is_file():
        raise DataError(f"{path}: missing; the run directory's tokenizer is needed to reuse its vocabulary")
    return tokenizer_from_bytes(path.read_bytes(), str(path))


def tokenizers(p: Params, train: Pairs, reuse: Path | None) -> tuple[Tokenizer, Tokenizer]:
    """(source, target) tokenizers: the run's own when `reuse` is given, else trained on `train` only
    (streamed from its Arrow columns, never copied into lists)."""
    if reuse is not None:
        return _reuse(reuse, SOURCE_FILE), _reuse(reuse, TARGET_FILE)
    if p.shared_tokenizer:
        tok = _train(itertools.chain(train.sources, train.targets), p.source_tokenizer, target=True)
        return tok, tok
    return _train(iter(train.sources), p.source_tokenizer, False), _train(iter(train.targets), p.target_tokenizer, True)


def encode_targets(tok: Tokenizer, texts: list[str], max_length: int) -> np.ndarray:
    """[BOS] ids [EOS] per text, right-padded (int64)."""
    ids, lengths = encode(tok, texts, max_length, truncate=True)
    bos, eos = tok.token_to_id(BOS), tok.token_to_id(EOS)
    out = np.full((len(texts), ids.shape[1] + 2), PAD_ID, dtype=np.int64)
    out[:, 0] = bos
    for row, n in enumerate(lengths.tolist()):
        out[row, 1:n + 1] = ids[row, :n]
        out[row, n + 1] = eos
    return out


class TokenizedPairs(Dataset[tuple[Tensor, Tensor]]):
    """(source ids, target ids) of each pair, tokenized when a loader asks (a batch at once, in its workers)."""

    def __init__(self, pairs: Pairs, source: Tokenizer, target: Tokenizer, p: Params) -> None:
        self.pairs, self.source, self.target = pairs, source, target
        self.source_length, self.target_length = p.source_tokenizer.max_length, p.target_tokenizer.max_length

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Tensor, Tensor]]:
        src = padded_ids(self.source, self.pairs.sources.at(indices), self.source_length)
        tgt = encode_targets(self.target, self.pairs.targets.at(indices), self.target_length)
        tgt = np.pad(tgt, [(0, 0), (0, self.target_length + 2 - tgt.shape[1])], constant_values=PAD_ID)
        return [(torch.from_numpy(s), torch.from_numpy(t)) for s, t in zip(src, tgt, strict=True)]


def load_seq2seq_data(cfg: ExperimentConfig, reuse: Path | None = None) -> DataBundle:
    entry = PARALLEL.get(cfg.data.dataset)
    params = entry.params.model_validate(cfg.data.params)
    splits = load_parallel(cfg.data.dataset, params, cfg.data.val_fraction, cfg.data.test_fraction, cfg.seed)
    source, target = tokenizers(params, splits.train, reuse)
    train, val, test = (TokenizedPairs(getattr(splits, name), source, target, params)
                        for name in ("train", "val", "test"))
    artifacts = {SOURCE_FILE: tokenizer_to_bytes(source), TARGET_FILE: tokenizer_to_bytes(target)}
    prep = TranslationPreprocessing(
        source_tokenizer=SOURCE_FILE, target_tokenizer=TARGET_FILE, pad_id=PAD_ID,
        bos_id=target.token_to_id(BOS), eos_id=target.token_to_id(EOS),
        source_vocab=source.get_vocab_size(), target_vocab=target.get_vocab_size(),
        max_source_tokens=params.source_tokenizer.max_length, max_target_tokens=params.target_tokenizer.max_length,
        decoding=cfg.eval.decode.model_dump(),
        target_tokenizer_sha256=hashlib.sha256(artifacts[TARGET_FILE]).hexdigest())  # finds them in evaluate
    return DataBundle(train, val, test, labels=[], input_shape=(-1,), integer_input=True, preprocessing=prep,
                      artifacts=artifacts)
