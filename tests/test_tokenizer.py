"""Tokenizers (Hugging Face `tokenizers`): every kind trains on texts, round-trips through its JSON
file bit for bit, pads on the right with id 0, and refuses what a server must refuse."""

from __future__ import annotations

import numpy as np
import pytest

from dlforge.text import (
    PAD_ID,
    UNK_ID,
    TokenizerConfig,
    TokenizerError,
    decode,
    encode,
    tokenizer_from_bytes,
    tokenizer_to_bytes,
    train_tokenizer,
)

TEXTS = ["the cat sat on the mat", "Der Hund schläft im Garten", "le chat dort sur le tapis",
         "el perro come pan", "the dog eats bread", "un deux trois quatre cinq"] * 3


@pytest.mark.parametrize("kind", ["char", "word", "bpe", "wordpiece"])
def test_every_kind_trains_saves_and_reloads_identically(kind: str) -> None:
    tok = train_tokenizer(TEXTS, TokenizerConfig(kind=kind, vocab_size=80))
    assert tok.get_vocab_size() <= 80
    again = tokenizer_from_bytes(tokenizer_to_bytes(tok))
    queries = ["the cat eats", "Le chien", "xyzzy qq"]
    ids, lengths = encode(tok, queries, 64, truncate=False)
    ids2, lengths2 = encode(again, queries, 64, truncate=False)
    assert np.array_equal(ids, ids2) and np.array_equal(lengths, lengths2)
    assert ids.dtype == np.int64 and ids.shape == (3, lengths.max())
    for row, n in zip(ids, lengths, strict=True):
        assert (row[:n] != PAD_ID).all() and (row[n:] == PAD_ID).all()  # right padding, pad only there
    assert decode(tok, ids[0].tolist()) == "the cat eats"


def test_char_tokens_are_characters_and_unknown_ones_map_to_unk() -> None:
    tok = train_tokenizer(["abc abc"], TokenizerConfig(kind="char", lowercase=True))
    ids, lengths = encode(tok, ["ABz"], 8, truncate=False)
    assert lengths.tolist() == [3] and ids[0, 2] == UNK_ID and ids[0, 0] == tok.token_to_id("a")


def test_lowercase_is_a_setting() -> None:
    cased = train_tokenizer(["Aa"], TokenizerConfig(kind="char", lowercase=False))
    assert cased.token_to_id("A") is not None and cased.token_to_id("a") is not None


def test_long_texts_are_cut_for_training_and_refused_for_requests() -> None:
    tok = train_tokenizer(TEXTS, TokenizerConfig(kind="word"))
    ids, lengths = encode(tok, ["the cat sat on the mat"], 3, truncate=True)
    assert ids.shape == (1, 3) and lengths.tolist() == [3]
    with pytest.raises(TokenizerError, match="text 0 has 6 tokens; this model takes at most 3"):
        encode(tok, ["the cat sat on the mat"], 3, truncate=False)
    with pytest.raises(TokenizerError, match="text 1 has no tokens"):
        encode(tok, ["the cat", "   "], 3, truncate=False)


def test_a_file_that_is_not_a_tokenizer_is_refused() -> None:
    with pytest.raises(TokenizerError, match="not a tokenizer file"):
        tokenizer_from_bytes(b'{"nope": 1}')
