"""Serving translation (torch-free): sentences in, translations out, both BYTES tensors of UTF-8 text.

`decode` tokenizes each request with the package's own source_tokenizer.json (too long or invalid
UTF-8 → 400); the batcher pads `src` so sentences of any length share a batch; the runtime
(`Seq2SeqRuntime`) runs the numpy search over the ONNX encoder and decoder-step graphs; `encode`
turns target ids back into text.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dlforge.decoding import SearchSettings, Special, search
from dlforge.decoding.onnx_engine import OnnxEngine
from dlforge.preprocessing import TranslationPreprocessing
from dlforge.serve.contract import package_metadata
from dlforge.serve.protocol import MetadataTensor, ProtocolError
from dlforge.serve.tensors import utf8_texts
from dlforge.taskapi import Codec
from dlforge.text import (
    PAD_ID,
    TokenizerError,
    char_limit,
    decode,
    encode,
    tokenizer_from_bytes,
    unknown_parameters,
    unknown_warnings,
)

TEXT, TRANSLATION, SRC, IDS = "text", "translation", "src", "ids"


class TranslationCodec(Codec):
    def __init__(self, package: Any) -> None:
        prep = TranslationPreprocessing.of(package.manifest.preprocessing)
        self.source = tokenizer_from_bytes(package.path(prep.source_tokenizer).read_bytes())
        self.target = tokenizer_from_bytes(package.path(prep.target_tokenizer).read_bytes())
        self.max_length = prep.max_source_tokens
        self.max_chars = char_limit(self.source, self.max_length)
        self.inputs = [MetadataTensor(name=TEXT, datatype="BYTES", shape=[-1])]
        self.outputs = [MetadataTensor(name=TRANSLATION, datatype="BYTES", shape=[-1])]
        self.pad = {SRC: PAD_ID}
        self.output_pad = {IDS: PAD_ID}  # each batch decodes to its own longest translation

    def tokenize(self, texts: list[str]) -> np.ndarray:
        try:
            return encode(self.source, texts, self.max_length, truncate=False, max_chars=self.max_chars)[0]
        except TokenizerError as exc:
            raise ProtocolError(f"input '{TEXT}': {exc}") from None

    def detokenize(self, ids: np.ndarray) -> list[str]:
        return [decode(self.target, [t for t in row if t != PAD_ID]) for row in ids.tolist()]

    def decode(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {SRC: self.tokenize(utf8_texts(inputs[TEXT], TEXT))}

    def decode_texts(self, texts: list[str]) -> dict[str, np.ndarray]:
        return {SRC: self.tokenize(texts)}

    def response_parameters(self, graph: dict[str, np.ndarray]) -> dict[str, float | int | str | bool]:
        return dict(unknown_parameters(graph[SRC]))

    def encode(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = np.empty(len(outputs[IDS]), dtype=object)
        out[:] = [t.encode() for t in self.detokenize(outputs[IDS])]
        return {TRANSLATION: out}

    def translate(self, runtime: Any, texts: list[str], first: int = 1) -> tuple[list[str], list[str]]:
        """(translations, warnings) of sentences through `runtime` (the `dlforge translate` path; no batcher);
        a warning names each sentence (numbered from `first`) that is mostly unknown tokens."""
        graph = self.decode({TEXT: np.array(texts, dtype=object)})
        warnings = unknown_warnings(graph[SRC], [f"sentence {first + i}" for i in range(len(texts))])
        return self.detokenize(runtime.infer(graph)[IDS]), warnings


def pad_ids(rows: list[list[int]]) -> np.ndarray:
    """Target ids right-padded with [PAD] (at least one column, so empty translations keep their row)."""
    out = np.full((len(rows), max([len(r) for r in rows] + [1])), PAD_ID, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


class Seq2SeqRuntime:
    """The serving engine of a seq2seq package: `src` ids → search → `ids` (ONNX Runtime, or torch)."""

    def __init__(self, package: Any, threads: int, engine: Any = None, platform: str = "onnxruntime_onnx") -> None:
        m = package.manifest
        prep = TranslationPreprocessing.of(m.preprocessing)
        self.engine = engine or OnnxEngine(package.path(m.graphs[0]), package.path(m.graphs[1]), threads)
        self.special = Special(prep.bos_id, prep.eos_id)
        self.settings = SearchSettings.model_validate(m.task_info["decoding"])
        self.metadata = package_metadata(package, platform)

    def infer(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {IDS: pad_ids(search(self.engine, batch[SRC], self.special, self.settings))}


def torch_runtime(package: Any, threads: int) -> Seq2SeqRuntime:
    """The same search over the torch model rebuilt from the package's weights and config."""
    import torch
    from safetensors.torch import load_file

    from dlforge.config import load_config
    from dlforge.nn.seq2seq import Vocab, build_seq2seq
    from dlforge.nn.seq2seq.engine import TorchEngine

    torch.set_num_threads(max(1, threads))
    cfg = load_config(package.path("config.yaml"))
    vocab = Vocab.of(package.manifest.preprocessing)
    model = build_seq2seq(cfg.model.arch or "", cfg.model.params, vocab)
    model.load_state_dict(load_file(str(package.path("model.safetensors"))))
    return Seq2SeqRuntime(package, threads, TorchEngine(model.eval(), torch.device("cpu")), "pytorch_safetensors")


def translate_lines(package: Any, lines: list[str], runtime: str = "onnx", beam: int | None = None,
                    batch_size: int = 32, warnings: list[str] | None = None) -> list[str]:
    """Translations of `lines` by a loaded package (what `dlforge translate` prints); PackageError on bad input.
    Sentences that are mostly unknown tokens add a line to `warnings`."""
    from dlforge.export.errors import PackageError

    if package.manifest.task != "seq2seq":
        raise PackageError(f"{package.root}: a {package.manifest.task} package, not a translation (seq2seq) model; "
                           "use dlforge predict")
    if runtime not in ("onnx", "torch"):
        raise PackageError(f"--runtime {runtime!r}: use onnx or torch")
    engine = Seq2SeqRuntime(package, 0) if runtime == "onnx" else torch_runtime(package, 0)
    if beam is not None:
        engine.settings = engine.settings.model_copy(update={"beam_size": beam})
    translator, out = TranslationCodec(package), []
    for start in range(0, len(lines), batch_size):
        try:
            translated, flagged = translator.translate(engine, lines[start:start + batch_size], start + 1)
        except ProtocolError as exc:
            raise PackageError(f"sentences {start + 1}-{start + batch_size}: {exc}") from None
        out += translated
        if warnings is not None:
            warnings += flagged
    return out
