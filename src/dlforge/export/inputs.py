"""What values a packaged model may be given, checked before the engine sees them (predict and serve).

ONNX Runtime trusts its inputs: an empty sequence aborts the whole process inside a recurrent op,
a token id past the embedding table raises deep in a Gather (or wraps around when negative), and
NaN/Inf flows through to `null` outputs. These checks are cheap (one pass over the array) and
turn every such case into one clear message. numpy only: the server imports this without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dlforge.errors import UserError
from dlforge.preprocessing import Preprocessing, TextPreprocessing, TokensPreprocessing


class InputError(UserError, ValueError):
    """Input values this model cannot take; the message names the input and the fix."""


@dataclass(frozen=True)
class InputRules:
    """Per-model value rules, read once from the package's manifest."""

    vocab_size: int | None = None  # integer (token id) inputs must lie in [0, vocab_size)
    allow_nonfinite: bool = False  # NaN/Inf float inputs are refused unless allowed

    @classmethod
    def from_preprocessing(cls, preprocessing: Preprocessing | None, allow_nonfinite: bool = False) -> InputRules:
        """Token ids of text and token inputs must lie within the vocabulary; other kinds have no such rule."""
        vocab = preprocessing.vocab_size if isinstance(preprocessing, TextPreprocessing | TokensPreprocessing) else None
        return cls(vocab, allow_nonfinite)


def check_values(what: str, array: np.ndarray, rules: InputRules) -> None:
    """Raise InputError for empty dimensions, out-of-vocabulary ids or non-finite floats."""
    if array.ndim == 0:
        raise InputError(f"{what}: needs at least one row on the first (batch) dimension, got a scalar")
    if 0 in array.shape:
        axis = array.shape.index(0)
        kind = "batch dimension" if axis == 0 else f"dimension {axis}"
        raise InputError(f"{what}: shape {list(array.shape)} has an empty {kind}; send at least one "
                         f"{'row' if axis == 0 else 'element (e.g. one token)'}")
    kind = array.dtype.kind
    if kind in "iu" and rules.vocab_size is not None:
        low, high = int(array.min()), int(array.max())
        if low < 0 or high >= rules.vocab_size:
            bad = low if low < 0 else high
            raise InputError(f"{what}: token id {bad} is outside the vocabulary [0, {rules.vocab_size - 1}]")
    elif kind == "f" and not rules.allow_nonfinite and not np.isfinite(array).all():
        raise InputError(f"{what}: has NaN or infinite values (a number too large for the datatype, e.g. 1e39 "
                         "in FP32, becomes infinite); send finite numbers")
