"""Serving codecs of classification (torch-free): what a client sends and gets back.

Models over tensors (images, feature sequences, token ids) take and return the graph's own tensors.
Text models take raw UTF-8 strings (a BYTES tensor) and tokenize them here with the package's own
tokenizer.json — the file training used — then answer with labels and probabilities. Uploaded files
(`/classify`, `dlforge predict`) are decoded by the package's preprocessing kind: images and audio clips
exactly as training decoded them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dlforge.preprocessing import AudioPreprocessing, TextPreprocessing
from dlforge.serve.audio import preprocess_audio
from dlforge.serve.images import preprocess_image
from dlforge.serve.protocol import MetadataTensor, ProtocolError
from dlforge.serve.tensors import utf8_texts
from dlforge.taskapi import Codec
from dlforge.text import PAD_ID, TokenizerError, char_limit, encode, tokenizer_from_bytes, unknown_parameters

TEXT, LABEL, PROBABILITIES = "text", "label", "probabilities"


def _specs(tensors: list[Any]) -> list[MetadataTensor]:
    return [MetadataTensor(name=t.name, datatype=t.datatype, shape=list(t.shape)) for t in tensors]


class TensorCodec(Codec):
    """The graph's signature is the client's: nothing to decode or encode. Uploads are decoded by the
    package's preprocessing kind (image or audio)."""

    ranks_labels = True

    def __init__(self, manifest: Any) -> None:
        self.inputs = _specs(manifest.inputs)
        self.outputs = _specs(manifest.outputs)
        self.preprocessing = manifest.preprocessing
        self.graph_input = manifest.inputs[0].name

    def decode_texts(self, texts: list[str]) -> dict[str, np.ndarray]:
        takes = ("an audio clip (curl -F file=@clip.wav)" if isinstance(self.preprocessing, AudioPreprocessing)
                 else "an image file (curl -F file=@digit.png)")
        raise ProtocolError(f"field 'text': this model takes {takes}, not text; or POST its tensors to /infer")

    def decode_upload(self, data: bytes | Path) -> dict[str, np.ndarray]:
        if isinstance(self.preprocessing, AudioPreprocessing):
            return {self.graph_input: preprocess_audio(data, self.preprocessing)}
        return {self.graph_input: preprocess_image(data, self.preprocessing)}


class TextCodec(Codec):
    """`text` (BYTES [n], raw UTF-8) → token ids → `label` (BYTES [n]) and `probabilities` (FP32 [n, classes])."""

    def __init__(self, package: Any) -> None:
        manifest = package.manifest
        prep = TextPreprocessing.of(manifest.preprocessing, "a text codec")
        self.tokenizer = tokenizer_from_bytes(package.path(prep.tokenizer).read_bytes())
        self.max_length = prep.max_length
        self.max_chars = char_limit(self.tokenizer, self.max_length)  # a megabyte string is refused uncounted
        self.labels = [label.encode() for label in manifest.labels]
        self.graph_input = manifest.inputs[0].name
        self.inputs = [MetadataTensor(name=TEXT, datatype="BYTES", shape=[-1])]
        self.outputs = [MetadataTensor(name=LABEL, datatype="BYTES", shape=[-1]),
                        MetadataTensor(name=PROBABILITIES, datatype="FP32", shape=[-1, len(self.labels)])]
        self.pad = {self.graph_input: PAD_ID}  # any lengths share a batch

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Right-padded token ids; TokenizerError names the first text the model cannot take."""
        return encode(self.tokenizer, texts, self.max_length, truncate=False, max_chars=self.max_chars)[0]

    def tokenize(self, texts: list[str]) -> np.ndarray:
        try:
            return self.encode_texts(texts)
        except TokenizerError as exc:
            raise ProtocolError(f"input '{TEXT}': {exc}") from None

    ranks_labels = True

    def decode(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {self.graph_input: self.tokenize(utf8_texts(inputs[TEXT]))}

    def decode_texts(self, texts: list[str]) -> dict[str, np.ndarray]:
        return {self.graph_input: self.tokenize(texts)}

    def response_parameters(self, graph: dict[str, np.ndarray]) -> dict[str, float | int | str | bool]:
        return dict(unknown_parameters(graph[self.graph_input]))

    def encode(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        probabilities = outputs[PROBABILITIES]
        labels = np.empty(len(probabilities), dtype=object)
        labels[:] = [self.labels[i] for i in probabilities.argmax(axis=1)]
        return {LABEL: labels, PROBABILITIES: probabilities}
