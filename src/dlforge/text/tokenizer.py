"""Tokenizers from the Hugging Face `tokenizers` library (Rust): char, word-level, BPE, WordPiece.

Trained offline on the train split only and saved as one `tokenizer.json`, which the run directory and
the model package keep (hashed), so training, `dlforge predict` and the server tokenize identically.
Torch-free: the server imports this. Id 0 is always `[PAD]` and id 1 `[UNK]`; padding is on the right.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from dlforge.errors import UserError

PAD, UNK = "[PAD]", "[UNK]"
PAD_ID, UNK_ID = 0, 1
SPECIAL = [PAD, UNK]
TOKENIZER_FILE = "tokenizer.json"


class TokenizerError(UserError, ValueError):
    """Text that cannot be tokenized as asked (empty, too long, not a tokenizer file).

    `index` is the position of the text at fault in the batch, `reason` the problem without it."""

    def __init__(self, reason: str, index: int | None = None) -> None:
        self.reason, self.index = reason, index
        super().__init__(reason if index is None else f"text {index} {reason}")


class TokenizerConfig(BaseModel):
    """How text becomes token ids (`data.params.tokenizer` of text datasets)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["char", "word", "bpe", "wordpiece"] = Field("char", description="char | word | bpe | wordpiece")
    vocab_size: int = Field(1000, ge=4, description="at most this many tokens, [PAD] and [UNK] included")
    lowercase: bool = True
    max_length: int = Field(128, ge=1, description="tokens per text: longer training texts are cut, "
                                                    "longer requests refused")
    min_frequency: int = Field(1, ge=1, description="rarer tokens become [UNK]")


def _model_and_trainer(cfg: TokenizerConfig) -> tuple[models.Model, trainers.Trainer]:
    common = {"vocab_size": cfg.vocab_size, "min_frequency": cfg.min_frequency, "special_tokens": SPECIAL}
    if cfg.kind == "bpe":
        return models.BPE(unk_token=UNK), trainers.BpeTrainer(show_progress=False, **common)  # type: ignore[arg-type]
    if cfg.kind == "wordpiece":
        return models.WordPiece(unk_token=UNK), trainers.WordPieceTrainer(show_progress=False, **common)  # type: ignore[arg-type]
    return models.WordLevel(unk_token=UNK), trainers.WordLevelTrainer(show_progress=False, **common)  # type: ignore[arg-type]


def _pre_tokenizer(kind: str) -> tuple[pre_tokenizers.PreTokenizer, decoders.Decoder | None]:
    """How text is cut before the model sees it, and the decoder that undoes it (None: join with spaces)."""
    if kind == "char":  # every character (spaces included) is a token
        return pre_tokenizers.Split(Regex("."), behavior="isolated"), decoders.Fuse()
    if kind == "wordpiece":
        return pre_tokenizers.BertPreTokenizer(), decoders.WordPiece()
    if kind == "bpe":  # spaces kept as ▁ so decoding restores them
        return pre_tokenizers.Metaspace(), decoders.Metaspace()
    return pre_tokenizers.Whitespace(), None  # words and punctuation apart


def train_tokenizer(texts: Iterable[str], cfg: TokenizerConfig) -> Tokenizer:
    """A tokenizer of `cfg.kind` trained on `texts` (pass the train split only; an iterator streams them)."""
    model, trainer = _model_and_trainer(cfg)
    tok = Tokenizer(model)
    steps = [normalizers.NFKC(), *([normalizers.Lowercase()] if cfg.lowercase else [])]
    tok.normalizer = normalizers.Sequence(steps)  # type: ignore[assignment]
    tok.pre_tokenizer, decoder = _pre_tokenizer(cfg.kind)  # type: ignore[assignment]
    if decoder is not None:
        tok.decoder = decoder  # type: ignore[assignment]
    tok.train_from_iterator(texts, trainer)
    if tok.token_to_id(PAD) != PAD_ID or tok.token_to_id(UNK) != UNK_ID:  # the trainers put specials first
        raise TokenizerError(f"tokenizer: {PAD}/{UNK} must be ids {PAD_ID}/{UNK_ID}")
    return tok


def tokenizer_to_bytes(tok: Tokenizer) -> bytes:
    return tok.to_str().encode()


def tokenizer_from_bytes(data: bytes, what: str = TOKENIZER_FILE) -> Tokenizer:
    """A saved tokenizer (JSON, never code); TokenizerError when it is not one."""
    try:
        tok = Tokenizer.from_str(data.decode())
    except Exception as exc:  # the Rust side raises a plain Exception for bad JSON
        raise TokenizerError(f"{what}: not a tokenizer file: {exc}") from None
    if tok.token_to_id(PAD) != PAD_ID:
        raise TokenizerError(f"{what}: {PAD} is not id {PAD_ID}; it was not written by dlforge")
    return tok


UNRELIABLE_SHARE = 0.5  # above this share of [UNK] tokens an answer is flagged: a CLI warning, a response parameter


def unknown_share(ids: np.ndarray) -> np.ndarray:
    """Per row of right-padded ids: the share of its tokens that are [UNK] — how much of a text the model
    cannot see (a sentence in another alphabet translates to something fluent and wrong, with no other sign)."""
    return (ids == UNK_ID).sum(axis=1) / np.maximum((ids != PAD_ID).sum(axis=1), 1)


def unknown_parameters(ids: np.ndarray) -> dict[str, float]:
    """The response parameters of a request's ids: [UNK] share over all its tokens, and its worst row's."""
    real = int((ids != PAD_ID).sum())
    return {"unknown_token_share": round(int((ids == UNK_ID).sum()) / max(real, 1), 4),
            "unknown_token_share_max": round(float(unknown_share(ids).max(initial=0.0)), 4)}


def unknown_warnings(ids: np.ndarray, sources: list[str]) -> list[str]:
    """One line per text whose [UNK] share is above UNRELIABLE_SHARE (what the CLI prints as warnings)."""
    return [f"{source}: {share:.0%} of its tokens are unknown to this model's tokenizer ([UNK]); "
            "the answer is unreliable (is it in the language and alphabet the model was trained on?)"
            for source, share in zip(sources, unknown_share(ids).tolist(), strict=True) if share > UNRELIABLE_SHARE]


def char_limit(tok: Tokenizer, max_length: int, slack: int = 4, floor: int = 16384) -> int:
    """Non-space characters beyond which a request's text is refused untokenized: a token rarely covers more
    characters than the vocabulary's longest entry (`slack` for normalizers that drop characters; `floor`
    keeps odd but real texts, e.g. a long unknown word that a word tokenizer maps to one [UNK])."""
    longest = max((len(token) for token in tok.get_vocab()), default=1)
    return max(max_length * max(longest, 1) * slack, floor)


def encode(tok: Tokenizer, texts: list[str], max_length: int, truncate: bool,
           max_chars: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ids int64 [n, longest], lengths int64 [n]), right-padded with [PAD] to the longest text.

    `truncate`: cut texts to `max_length` tokens (training data) instead of refusing them (requests).
    `max_chars` (from `char_limit`): refuse a text with more non-space characters before tokenizing anything,
    so a megabyte string costs a length count, not a tokenization."""
    if max_chars is not None and not truncate:
        for i, text in enumerate(texts):
            if len(text) > max_chars and len(text) - sum(map(text.count, " \t\n\r")) > max_chars:
                raise TokenizerError(f"is {len(text)} characters long; this model takes at most {max_length} "
                                     "tokens (shorten it)", i)
    encodings = tok.encode_batch(texts, add_special_tokens=False)
    lengths = np.array([len(e.ids) for e in encodings], dtype=np.int64)
    if not truncate:
        check_lengths(lengths, max_length)
    lengths = np.minimum(lengths, max_length)
    ids = np.full((len(texts), max(int(lengths.max(initial=0)), 1)), PAD_ID, dtype=np.int64)
    for row, (enc, n) in enumerate(zip(encodings, lengths, strict=True)):
        ids[row, :n] = enc.ids[:n]
    return ids, lengths


def padded_ids(tok: Tokenizer, texts: list[str], max_length: int) -> np.ndarray:
    """[n, max_length] int64 ids of training texts: cut to max_length, right-padded with [PAD]."""
    ids, _ = encode(tok, texts, max_length, truncate=True)
    return np.pad(ids, [(0, 0), (0, max_length - ids.shape[1])], constant_values=PAD_ID)


def check_lengths(lengths: np.ndarray, max_length: int) -> None:
    empty = np.flatnonzero(lengths == 0)
    if len(empty):
        raise TokenizerError("has no tokens (empty or only spaces); send some text", int(empty[0]))
    long = np.flatnonzero(lengths > max_length)
    if len(long):
        raise TokenizerError(f"has {int(lengths[long[0]])} tokens; this model takes at most {max_length} "
                             "(shorten it)", int(long[0]))


def decode(tok: Tokenizer, ids: list[int]) -> str:
    """Text from ids ([PAD] and other special tokens dropped)."""
    return tok.decode(ids, skip_special_tokens=True)
