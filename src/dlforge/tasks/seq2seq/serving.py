"""Seq2seq's serving side (torch-free): the text codec and the decoding-loop engines (ONNX or torch)."""

from __future__ import annotations

from typing import Any

from dlforge.taskapi import Codec, Engine, Serving, TaskError


class Seq2SeqServing(Serving):
    name = "seq2seq"

    def codec(self, package: Any) -> Codec:
        from dlforge.tasks.seq2seq.codec import TranslationCodec

        return TranslationCodec(package)

    def runtime(self, kind: str, package: Any, threads: int) -> Engine | None:
        from dlforge.tasks.seq2seq.codec import Seq2SeqRuntime, torch_runtime  # torch only when built

        if kind == "onnx":
            return Seq2SeqRuntime(package, threads)
        if kind == "torch":
            return torch_runtime(package, threads)
        raise TaskError(f"{package.root}: --runtime {kind}: a seq2seq package runs on onnx or torch")


SERVING = Seq2SeqServing()
