"""Greedy and beam search on a hand-made engine whose best sentence greedy cannot find."""

import numpy as np
import pytest

from dlforge.decoding import SearchSettings, Special, beam_search, greedy_search, search

BOS, EOS, A, B, C = 0, 1, 2, 3, 4
SPECIAL = Special(BOS, EOS)


class MarkovEngine:
    """Next-token probabilities depend on the previous token only; rows of a batch are independent.

    After BOS: A 0.5, B 0.4; after A the model is unsure (C 0.4, A 0.3, EOS 0.3); after B or C the sentence
    ends surely. So greedy says "A C" (0.5 * 0.4 = 0.2) while "B" alone is twice as likely (0.4)."""

    def __init__(self) -> None:
        table = np.full((5, 5), 1e-9)
        table[BOS, [A, B, C]] = [0.5, 0.4, 0.1]
        table[A, [C, A, EOS]] = [0.4, 0.3, 0.3]
        table[B, EOS] = 1.0
        table[C, EOS] = 1.0
        table[EOS, EOS] = 1.0
        self.log_table = np.log(table / table.sum(1, keepdims=True)).astype(np.float32)
        self.steps = 0

    def encode(self, src: np.ndarray) -> dict[str, np.ndarray]:
        return {"row": np.arange(len(src))}

    def step(self, tokens: np.ndarray, state: dict) -> tuple[np.ndarray, dict]:
        self.steps += 1
        return self.log_table[tokens], state

    def select(self, state: dict, rows: np.ndarray) -> dict:
        return {k: v[rows] for k, v in state.items()}


def test_beam_finds_the_more_likely_sentence_greedy_misses() -> None:
    src = np.zeros((3, 2), dtype=np.int64)
    greedy = greedy_search(MarkovEngine(), src, SPECIAL, max_length=10)
    assert greedy == [[A, C]] * 3
    beam = beam_search(MarkovEngine(), src, SPECIAL, SearchSettings(beam_size=3, length_penalty=0.0, max_length=10))
    assert beam == [[B]] * 3


def test_beam_of_one_is_greedy_and_max_length_caps_output() -> None:
    src = np.zeros((2, 2), dtype=np.int64)
    settings = SearchSettings(beam_size=1, length_penalty=0.0, max_length=3)
    assert beam_search(MarkovEngine(), src, SPECIAL, settings) == greedy_search(MarkovEngine(), src, SPECIAL, 3)
    assert all(len(ids) <= 3 for ids in search(MarkovEngine(), src, SPECIAL, settings))


def test_finished_sentences_leave_the_greedy_batch() -> None:
    engine = MarkovEngine()
    engine.log_table[BOS] = np.log(np.array([1e-9, 1e-9, 1e-9, 1.0, 1e-9], dtype=np.float32))  # B then EOS
    greedy_search(engine, np.zeros((4, 2), dtype=np.int64), SPECIAL, max_length=50)
    assert engine.steps == 2  # not 50: the loop ends when every sentence has produced EOS


@pytest.mark.parametrize("alpha", [0.0, 2.0])
def test_length_penalty_decides_between_short_and_long(alpha: float) -> None:
    engine = MarkovEngine()
    # after A, A is almost sure and leads to a cheap long sentence; B alone is slightly more likely in total
    engine.log_table[BOS] = np.log(np.array([1e-9, 1e-9, 0.45, 0.55, 1e-9], dtype=np.float32))
    engine.log_table[A] = np.log(np.array([1e-9, 0.02, 0.98, 1e-9, 1e-9], dtype=np.float32))
    settings = SearchSettings(beam_size=2, length_penalty=alpha, max_length=6)
    best = beam_search(engine, np.zeros((1, 2), dtype=np.int64), SPECIAL, settings)[0]
    assert best == ([B] if alpha == 0.0 else [A] * 6)
