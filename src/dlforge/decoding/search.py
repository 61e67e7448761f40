"""Batched greedy and beam search over any `Engine` (numpy in, numpy log-probabilities out).

An engine encodes a padded batch of source ids into a state (named arrays, batch on axis 0), runs one
decoder step for a batch of previous tokens, and selects state rows (beam reordering, dropping
finished sentences). The search owns everything else, identically for every engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

State = dict[str, Any]


class Engine(Protocol):
    def encode(self, src: np.ndarray) -> State:
        """State for int64 source ids (B, S), right-padded."""
        ...

    def step(self, tokens: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """(log-probabilities float32 (B, V) of the next token, the whole updated state)."""
        ...

    def select(self, state: State, rows: np.ndarray) -> State:
        """The state of `rows` (int64 indices into axis 0, repeats allowed)."""
        ...


class SearchSettings(BaseModel):
    """How translations are searched for; stored in the package so every runtime decodes alike."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    beam_size: int = Field(4, ge=1, le=64, description="1 = greedy")
    length_penalty: float = Field(0.6, ge=0, le=5,
                                  description="GNMT alpha: beams are ranked by score / ((5 + length) / 6)^alpha")
    max_length: int = Field(64, ge=1, le=4096, description="most target tokens generated per sentence")


@dataclass(frozen=True)
class Special:
    bos: int
    eos: int


def greedy_search(engine: Engine, src: np.ndarray, special: Special, max_length: int) -> list[list[int]]:
    """The most likely token at every step; finished sentences leave the batch (their rows are dropped)."""
    state = engine.encode(src)
    out: list[list[int]] = [[] for _ in range(len(src))]
    live = np.arange(len(src))  # the sentence each remaining row belongs to
    tokens = np.full(len(src), special.bos, dtype=np.int64)
    for _ in range(max_length):
        log_probs, state = engine.step(tokens, state)
        tokens = log_probs.argmax(-1).astype(np.int64)
        going = tokens != special.eos
        for row, token in zip(live[going].tolist(), tokens[going].tolist(), strict=True):
            out[row].append(token)
        if not going.all():
            keep = np.flatnonzero(going)
            if not len(keep):
                break
            state, live, tokens = engine.select(state, keep), live[keep], tokens[keep]
    return out


def _frozen_row(vocab: int, eos: int) -> np.ndarray:
    """Log-probabilities for a finished beam: it may only repeat EOS, at no cost."""
    row = np.full(vocab, -np.inf, dtype=np.float32)
    row[eos] = 0.0
    return row


def beam_search(engine: Engine, src: np.ndarray, special: Special, settings: SearchSettings) -> list[list[int]]:
    """Keep the `beam_size` best prefixes per sentence; finished ones stay in the beam until all finish.

    Beams compete on summed log-probability; the final pick divides by the GNMT length penalty."""
    n, k = len(src), settings.beam_size
    state = engine.select(engine.encode(src), np.repeat(np.arange(n), k))
    scores = np.full((n, k), -np.inf, dtype=np.float64)
    scores[:, 0] = 0.0  # all beams start identical: expand only the first
    history = np.zeros((n, k, 0), dtype=np.int64)
    finished = np.zeros((n, k), dtype=bool)
    lengths = np.zeros((n, k), dtype=np.int64)
    tokens = np.full(n * k, special.bos, dtype=np.int64)
    for _ in range(settings.max_length):
        log_probs, state = engine.step(tokens, state)
        vocab = log_probs.shape[-1]
        log_probs = np.where(finished.reshape(-1, 1), _frozen_row(vocab, special.eos), log_probs)
        candidates = (scores[..., None] + log_probs.reshape(n, k, vocab)).reshape(n, k * vocab)
        best = np.argsort(-candidates, axis=1, kind="stable")[:, :k]
        beam, token = best // vocab, best % vocab
        scores = np.take_along_axis(candidates, best, axis=1)
        history = np.concatenate([np.take_along_axis(history, beam[..., None], axis=1), token[..., None]], axis=2)
        was_finished = np.take_along_axis(finished, beam, axis=1)
        lengths = np.take_along_axis(lengths, beam, axis=1) + ~was_finished
        finished = was_finished | (token == special.eos)
        state = engine.select(state, (np.arange(n)[:, None] * k + beam).reshape(-1))
        tokens = token.reshape(-1)
        if finished.all():
            break
    penalty = ((5.0 + lengths) / 6.0) ** settings.length_penalty
    pick = np.argmax(scores / penalty, axis=1)
    return [_until_eos(history[i, pick[i]].tolist(), special.eos) for i in range(n)]


def _until_eos(ids: list[int], eos: int) -> list[int]:
    return ids[: ids.index(eos)] if eos in ids else ids


def search(engine: Engine, src: np.ndarray, special: Special, settings: SearchSettings) -> list[list[int]]:
    """Token ids of each sentence's translation (without BOS/EOS), greedy when beam_size is 1."""
    if settings.beam_size == 1:
        return greedy_search(engine, src, special, settings.max_length)
    return beam_search(engine, src, special, settings)
