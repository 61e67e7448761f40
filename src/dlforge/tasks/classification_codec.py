"""Serving codecs of classification (torch-free): what a client sends and gets back.

Models over tensors (images, feature sequences, token ids) take and return the graph's own tensors.
Text models take raw UTF-8 strings (a BYTES tensor) and tokenize them here with the package's own
tokenizer.json — the file training used — then answer with labels and probabilities.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dlforge.serve.protocol import MetadataTensor, ProtocolError
from dlforge.text import PAD_ID, TokenizerError, encode, tokenizer_from_bytes

TEXT, LABEL, PROBABILITIES = "text", "label", "probabilities"


def _specs(tensors: list[Any]) -> list[MetadataTensor]:
    return [MetadataTensor(name=t.name, datatype=t.datatype, shape=list(t.shape)) for t in tensors]


class TensorCodec:
    """The graph's signature is the client's: nothing to decode or encode."""

    def __init__(self, manifest: Any) -> None:
        self.inputs = _specs(manifest.inputs)
        self.outputs = _specs(manifest.outputs)
        self.optional: frozenset[str] = frozenset()
        self.pad: dict[str, int | float] = {}

    def decode(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return inputs

    def encode(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return outputs


def utf8_texts(array: np.ndarray, name: str = TEXT) -> list[str]:
    """The strings of a BYTES tensor; ProtocolError (400) names the first bad element."""
    texts = []
    for i, item in enumerate(array.reshape(-1).tolist()):
        try:
            texts.append(item.decode("utf-8") if isinstance(item, bytes) else str(item))
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"input '{name}': element {i} is not valid UTF-8 ({exc.reason} at byte "
                                f"{exc.start})") from None
    return texts


class TextCodec:
    """`text` (BYTES [n], raw UTF-8) → token ids → `label` (BYTES [n]) and `probabilities` (FP32 [n, classes])."""

    def __init__(self, package: Any) -> None:
        manifest = package.manifest
        prep = manifest.preprocessing
        self.tokenizer = tokenizer_from_bytes(package.path(prep["tokenizer"]).read_bytes())
        self.max_length = int(prep["max_length"])
        self.labels = [label.encode() for label in manifest.labels]
        self.graph_input = manifest.inputs[0].name
        self.inputs = [MetadataTensor(name=TEXT, datatype="BYTES", shape=[-1])]
        self.outputs = [MetadataTensor(name=LABEL, datatype="BYTES", shape=[-1]),
                        MetadataTensor(name=PROBABILITIES, datatype="FP32", shape=[-1, len(self.labels)])]
        self.optional: frozenset[str] = frozenset()
        self.pad: dict[str, int | float] = {self.graph_input: PAD_ID}  # any lengths share a batch

    def tokenize(self, texts: list[str]) -> np.ndarray:
        try:
            return encode(self.tokenizer, texts, self.max_length, truncate=False)[0]
        except TokenizerError as exc:
            raise ProtocolError(f"input '{TEXT}': {exc}") from None

    def decode(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {self.graph_input: self.tokenize(utf8_texts(inputs[TEXT]))}

    def encode(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        probabilities = outputs[PROBABILITIES]
        labels = np.empty(len(probabilities), dtype=object)
        labels[:] = [self.labels[i] for i in probabilities.argmax(axis=1)]
        return {LABEL: labels, PROBABILITIES: probabilities}


def codec(package: Any) -> TensorCodec | TextCodec:
    """The codec for a loaded classification package, by its preprocessing kind."""
    if package.manifest.preprocessing.get("kind") == "text":
        return TextCodec(package)
    return TensorCodec(package.manifest)
