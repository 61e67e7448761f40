"""torch.onnx.export without the exporter's own noise: what it says to torch developers, not to users.

Every graph dlforge writes (classifier, seq2seq encoder and decoder step, generator, denoiser) is
exported inside `quiet_exporter()`, so `dlforge export` prints the package path and nothing else.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

NOISE = (
    # RNN flat weights are re-assigned while tracing; harmless, torch asks for buffers instead
    (UserWarning, "The tensor attributes .* were assigned during export"),
    # torch 2.13's exporter calling its own deprecated internals: one per export, four more for RNNs
    (FutureWarning, "_check_is_size will be removed"),
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)`"),
    # two inputs share a dynamic axis (batch, src_len): the exporter keeps one name for both
    (UserWarning, r"# The axis name: .* will not be used"),
)


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" and the like
    with warnings.catch_warnings():
        for category, message in NOISE:
            warnings.filterwarnings("ignore", category=category, message=message)
        yield
