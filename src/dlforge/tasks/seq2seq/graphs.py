"""A sequence-to-sequence model as two ONNX graphs: the encoder and one decoder step with its state.

The decoding loop (greedy / beam, dlforge.decoding) runs outside the graphs, in numpy, so the exported
model decodes with exactly the search torch decoding uses; parity is checked on whole output strings.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import torch
from torch import Tensor, nn

from dlforge.decoding.onnx_engine import LOG_PROBS, OUT_SUFFIX, SRC, TOKENS
from dlforge.export.errors import ExportError
from dlforge.export.onnx import check_dynamic_axes, fresh_rnn_dispatch
from dlforge.export.quiet import quiet_exporter
from dlforge.nn.seq2seq.base import Seq2SeqModel

ENCODER_FILE, STEP_FILE = "encoder.onnx", "decoder_step.onnx"


class EncoderGraph(nn.Module):
    def __init__(self, model: Seq2SeqModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, src: Tensor) -> tuple[Tensor, ...]:
        state = self.model.encode(src)
        return tuple(state[k] for k in self.model.static_keys + self.model.dynamic_keys)


class StepGraph(nn.Module):
    """tokens + state → log-probabilities + the rewritten state (log_softmax inside: no post-processing)."""

    def __init__(self, model: Seq2SeqModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        keys = self.model.static_keys + self.model.dynamic_keys
        logits, updated = self.model.step(tokens, dict(zip(keys, state, strict=True)))
        return (torch.log_softmax(logits, dim=-1), *(updated[k] for k in self.model.dynamic_keys))


def _export(module: nn.Module, args: tuple[Tensor, ...], path: Path, opset: int, inputs: list[str],
            outputs: list[str], shapes: dict[str, object]) -> None:
    with quiet_exporter(), fresh_rnn_dispatch():  # else a second export fixes src_len
        torch.onnx.export(module.eval(), args, str(path), dynamo=True, opset_version=opset, input_names=inputs,
                          output_names=outputs, dynamic_shapes=shapes, external_data=False, verbose=False)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{path.name}: onnx.checker rejected the exported graph: {exc}") from None


def export_seq2seq(model: Seq2SeqModel, src: Tensor, bos: int, root: Path, opset: int) -> tuple[Path, Path]:
    """Write encoder.onnx and decoder_step.onnx for `model` (eval mode); `src` is a real batch (≥ 2 rows)."""
    model = model.eval()
    src = src[:3] if len(src) >= 2 else torch.cat([src, src])  # a batch of 1 would specialise the axis
    dims: dict[str, torch.export.Dim] = {}
    dim = lambda name: dims.setdefault(name, torch.export.Dim(name))
    keys = list(model.static_keys + model.dynamic_keys)
    _export(EncoderGraph(model), (src,), root / ENCODER_FILE, opset, [SRC], keys,
            {"src": {0: dim("batch"), 1: dim("src_len")}})
    check_dynamic_axes(root / ENCODER_FILE, {0: "batch", 1: "src_len"})
    with torch.no_grad():  # two steps in, so the cache axis of the example is not 0 or 1 (specialised)
        state = model.encode(src)
        for _ in range(2):
            _, updated = model.step(torch.full((len(src),), bos, dtype=torch.long), state)
            state = {**state, **updated}
    tokens = torch.full((len(src),), bos, dtype=torch.long)
    axes = [{0: dim("batch"), **{a: dim(n) for a, n in model.state_axes.get(k, {}).items()}} for k in keys]
    _export(StepGraph(model), (tokens, *(state[k] for k in keys)), root / STEP_FILE, opset, [TOKENS, *keys],
            [LOG_PROBS, *(k + OUT_SUFFIX for k in model.dynamic_keys)], {"tokens": {0: dim("batch")},
                                                                          "state": tuple(axes)})
    return root / ENCODER_FILE, root / STEP_FILE
