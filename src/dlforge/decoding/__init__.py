"""Decoding for sequence-to-sequence models, torch-free: greedy and beam search over a step engine.

The same search code drives the torch model (training-time metrics, parity) and the exported ONNX
graphs (`dlforge translate`, the server), so the two can only differ by the numbers the engines return.
"""

from dlforge.decoding.search import Engine, SearchSettings, Special, beam_search, greedy_search, search

__all__ = ["Engine", "SearchSettings", "Special", "beam_search", "greedy_search", "search"]
