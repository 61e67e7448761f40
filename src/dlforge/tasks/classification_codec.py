"""Serving codecs of classification (torch-free): what a client sends and gets back.

Models over tensors (images, feature sequences, token ids) take and return the graph's own tensors
unchanged. (Text models get a codec that tokenizes raw strings in the server.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dlforge.serve.protocol import MetadataTensor


def _specs(tensors: list[Any]) -> list[MetadataTensor]:
    return [MetadataTensor(name=t.name, datatype=t.datatype, shape=list(t.shape)) for t in tensors]


class TensorCodec:
    """The graph's signature is the client's: nothing to decode or encode."""

    def __init__(self, manifest: Any) -> None:
        self.inputs = _specs(manifest.inputs)
        self.outputs = _specs(manifest.outputs)
        self.pad: dict[str, int | float] = {}

    def decode(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return inputs

    def encode(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return outputs


def codec(package: Any) -> TensorCodec:
    """The codec for a loaded classification package."""
    return TensorCodec(package.manifest)
