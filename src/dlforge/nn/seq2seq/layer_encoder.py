"""A seq2seq encoder written as a layer list (`model.params.encoder`), from the same layers as any model.

The list reads padded source ids and must keep one output per step: e.g. `embedding` → `gru`/`lstm`
with `return_sequences: true` (bidirectional allowed), `positional` + `transformer_encoder`, `conv1d`…
Padding-aware layers get the mask derived from the ids, as in a text classifier, so padding never
changes the memory of real steps. The decoder attends over that memory and starts from its mean over
the real steps; the embedding's vocabulary and padding id come from the source tokenizer.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dlforge.config.common import ComponentSpec
from dlforge.nn.build import ModelBuildError, build_layers, takes_mask
from dlforge.nn.seq2seq.base import Vocab

PATH = "model.params.encoder"
PROBE_STEPS = 7  # the shape probe's source length when the tokenizer's is unknown: the layers must keep it


class LayerEncoder(nn.Module):
    """(memory (B, S, F), summary (B, F)) from source ids, like the built-in RNN encoder returns."""

    def __init__(self, body: nn.Sequential) -> None:
        super().__init__()
        self.body = body

    def forward(self, src: Tensor, padding: Tensor) -> tuple[Tensor, Tensor]:
        mask, x = ~padding, src
        for layer in self.body:
            x = layer(x, mask) if takes_mask(layer) else layer(x)
        real = mask.unsqueeze(-1).to(x.dtype)
        return x, (x * real).sum(1) / real.sum(1).clamp_min(1.0)


def build_layer_encoder(specs: list[ComponentSpec], vocab: Vocab) -> tuple[LayerEncoder, int]:
    """The encoder and its memory width; ModelBuildError names the layer and the fix."""
    specs = [_with_source_vocab(spec, index, vocab) for index, spec in enumerate(specs)]
    steps = vocab.max_source or PROBE_STEPS  # a `positional` table covers the longest source
    body, out = build_layers(specs, (steps,), PATH, torch.long)
    if len(out) != 2 or out[0] != steps:
        raise ModelBuildError(f"{PATH}: must return one vector per source step (steps, features); it returns "
                              f"{out} for {steps} steps — keep the steps, e.g. end with "
                              "`- gru: {hidden: 64, bidirectional: true, return_sequences: true}`")
    return LayerEncoder(body), out[1]


def _with_source_vocab(spec: ComponentSpec, index: int, vocab: Vocab) -> ComponentSpec:
    """An `embedding` takes its size and padding id from the source tokenizer (never from the user)."""
    if spec.type != "embedding":
        return spec
    params = dict(spec.params)
    for key, value in (("vocab_size", vocab.src_size), ("padding_idx", vocab.pad_id)):
        if key in params and params[key] != value:
            raise ModelBuildError(f"{PATH}[{index}].{key}: comes from the source tokenizer ({value}); leave it out")
        params[key] = value
    return spec.model_copy(update={"params": params})
