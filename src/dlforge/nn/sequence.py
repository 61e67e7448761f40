"""Sequence layers: LSTM/GRU stacks, pooling, positions and a Transformer encoder — padding-aware.

Over padded token ids (see `MaskedSequential`) these layers get a mask (True = a real token, padding on
the right) and padding never changes a prediction: recurrent layers run the backward direction over
each sequence reversed within its own length, pooling and attention ignore padded steps. Without a mask
(float sequences) every step counts, exactly as before.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from dlforge.config.components import Component
from dlforge.nn.layers import LAYERS, LayerShapeError, Params, Shape, need_rank


def lengths_of(mask: Tensor) -> Tensor:
    return mask.sum(dim=1).clamp_min(1)  # an all-padding row (shape probes) reads as one step


def reverse_within(x: Tensor, lengths: Tensor) -> Tensor:
    """Each sequence's first `length` steps reversed, padding left in place (its own inverse)."""
    steps = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
    index = torch.where(steps < lengths.unsqueeze(1), lengths.unsqueeze(1) - 1 - steps, steps)
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def last_step(x: Tensor, lengths: Tensor) -> Tensor:
    """x[b, length_b - 1] for every sequence b."""
    index = (lengths - 1).view(-1, 1, 1).expand(-1, 1, x.shape[-1])
    return x.gather(1, index).squeeze(1)


# --- LSTM / GRU ------------------------------------------------------------------------------------
class RecurrentParams(Params):
    hidden: int = Field(ge=1)
    num_layers: int = Field(1, ge=1)
    bidirectional: bool = False
    dropout: float = Field(0.0, ge=0, lt=1, description="between stacked layers")
    return_sequences: bool = Field(False, description="all steps (steps, hidden) or the last (hidden,)")


class Recurrent(nn.Module):
    """LSTM/GRU on (batch, steps, features), returning the sequence or the last (real) step's output."""

    takes_mask = True

    def __init__(self, rnn: nn.LSTM | nn.GRU, return_sequences: bool) -> None:
        super().__init__()
        self.rnn = rnn
        self.return_sequences = return_sequences

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is None:
            out, _ = self.rnn(x)
            return out if self.return_sequences else out[:, -1]
        lengths = lengths_of(mask)
        out = self._masked(x, lengths)
        return out if self.return_sequences else last_step(out, lengths)

    def _masked(self, x: Tensor, lengths: Tensor) -> Tensor:
        if not self.rnn.bidirectional:  # causal: right padding never reaches a real step
            return self.rnn(x)[0]
        for layer in range(self.rnn.num_layers):
            forward = self._run(x, layer, "")
            backward = reverse_within(self._run(reverse_within(x, lengths), layer, "_reverse"), lengths)
            x = torch.cat([forward, backward], dim=-1)
            if layer < self.rnn.num_layers - 1:
                x = F.dropout(x, self.rnn.dropout, self.training)
        return x

    def _run(self, x: Tensor, layer: int, suffix: str) -> Tensor:
        """One layer, one direction, with the weights nn.LSTM/GRU holds for it (so state dicts are unchanged)."""
        rnn = self.rnn
        kinds = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        weights = [getattr(rnn, f"{kind}_l{layer}{suffix}") for kind in kinds]
        h0 = x.new_zeros(1, x.shape[0], rnn.hidden_size)
        if isinstance(rnn, nn.LSTM):
            return torch.lstm(x, (h0, h0), weights, True, 1, 0.0, self.training, False, True)[0]
        return torch.gru(x, h0, weights, True, 1, 0.0, self.training, False, True)[0]


def _recurrent(kind: type[nn.LSTM] | type[nn.GRU], name: str, p: RecurrentParams, shape: Shape) -> nn.Module:
    need_rank(name, shape, (2,), "(steps, features)", " — use `embedding` first for token ids")
    rnn = kind(shape[-1], p.hidden, p.num_layers, batch_first=True, bidirectional=p.bidirectional,
               dropout=p.dropout if p.num_layers > 1 else 0.0)
    return Recurrent(rnn, p.return_sequences)


def lstm(p: RecurrentParams, shape: Shape) -> nn.Module:
    return _recurrent(nn.LSTM, "lstm", p, shape)


def gru(p: RecurrentParams, shape: Shape) -> nn.Module:
    return _recurrent(nn.GRU, "gru", p, shape)


# --- pooling over steps ------------------------------------------------------------------------------
class PoolParams(Params):
    mode: Literal["last", "mean", "max", "attention"] = "mean"


class SequencePool(nn.Module):
    """(batch, steps, features) → (batch, features) over the real steps only."""

    takes_mask = True

    def __init__(self, mode: str, features: int) -> None:
        super().__init__()
        self.mode = mode
        self.score = nn.Linear(features, 1) if mode == "attention" else None

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        if self.mode == "last":
            return last_step(x, lengths_of(mask))
        keep = mask.unsqueeze(-1)
        if self.mode == "mean":
            return (x * keep).sum(dim=1) / keep.sum(dim=1).clamp_min(1)
        lowest = torch.finfo(x.dtype).min  # not -inf: an all-padding row stays finite
        if self.mode == "max":
            return x.masked_fill(~keep, lowest).amax(dim=1)
        assert self.score is not None
        weights = torch.softmax(self.score(x).masked_fill(~keep, lowest), dim=1)
        return (weights * x).sum(dim=1)


def pool(p: PoolParams, shape: Shape) -> nn.Module:
    need_rank("pool", shape, (2,), "(steps, features)")
    return SequencePool(p.mode, shape[-1])


# --- convolution along the steps ------------------------------------------------------------------
class StepConvParams(Params):
    channels: int = Field(ge=1, description="output features per step")
    kernel: int = Field(3, ge=1, description="steps each output sees (odd: centred)")


class StepConv(nn.Module):
    """Conv1d + ReLU along the steps of (batch, steps, features): learned character n-gram detectors.

    Every step outside the text — padding, and the edges the convolution reaches past — reads one learned
    `outside` vector (zeros at first): a word at the start or end of a text then looks the same as one between
    spaces can, and a real step sees the same inputs however much padding follows (padding invariance)."""

    takes_mask = True

    def __init__(self, features: int, p: StepConvParams) -> None:
        super().__init__()
        self.conv = nn.Conv1d(features, p.channels, p.kernel)
        self.outside = nn.Parameter(torch.zeros(features))
        self.left = (p.kernel - 1) // 2
        self.right = p.kernel - 1 - self.left

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is not None:
            x = torch.where(mask.unsqueeze(-1), x, self.outside)
        b, _, f = x.shape
        x = torch.cat([self.outside.expand(b, self.left, f), x, self.outside.expand(b, self.right, f)], dim=1)
        return F.relu(self.conv(x.transpose(1, 2))).transpose(1, 2)


def step_conv(p: StepConvParams, shape: Shape) -> nn.Module:
    need_rank("step_conv", shape, (2,), "(steps, features)", " — use `embedding` first for token ids")
    return StepConv(shape[-1], p)


# --- positions and a Transformer encoder ---------------------------------------------------------------
class PositionalParams(Params):
    pass


class Positional(nn.Module):
    """Learned position embeddings added to (batch, steps, features); at most the built number of steps."""

    def __init__(self, steps: int, features: int) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(steps, features) * 0.02)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.table[: x.shape[1]]


def positional(p: PositionalParams, shape: Shape) -> nn.Module:
    need_rank("positional", shape, (2,), "(steps, features)")
    return Positional(shape[0], shape[1])


class EncoderParams(Params):
    heads: int = Field(4, ge=1)
    ff: int | None = Field(None, ge=1, description="feed-forward width (default 4 × features)")
    dropout: float = Field(0.1, ge=0, lt=1)


class EncoderBlock(nn.Module):
    """A pre-norm Transformer encoder block; padded steps are never attended to."""

    takes_mask = True

    def __init__(self, features: int, p: EncoderParams) -> None:
        super().__init__()
        self.heads, self.dropout = p.heads, p.dropout
        self.norm1, self.norm2 = nn.LayerNorm(features), nn.LayerNorm(features)
        self.qkv, self.proj = nn.Linear(features, 3 * features), nn.Linear(features, features)
        ff = p.ff or 4 * features
        self.mlp = nn.Sequential(nn.Linear(features, ff), nn.GELU(), nn.Linear(ff, features), nn.Dropout(p.dropout))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = x + self._attend(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x))

    def _attend(self, x: Tensor, mask: Tensor | None) -> Tensor:
        b, t, f = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, f // self.heads).permute(2, 0, 3, 1, 4)
        allowed = None if mask is None else mask[:, None, None, :]  # (batch, 1, 1, keys)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed,
                                             dropout_p=self.dropout if self.training else 0.0)
        return F.dropout(self.proj(out.transpose(1, 2).reshape(b, t, f)), self.dropout, self.training)


def encoder(p: EncoderParams, shape: Shape) -> nn.Module:
    need_rank("transformer_encoder", shape, (2,), "(steps, features)", " — use `embedding` first")
    if shape[-1] % p.heads:
        raise LayerShapeError(f"transformer_encoder: {shape[-1]} features do not split into {p.heads} heads")
    return EncoderBlock(shape[-1], p)


def register() -> None:
    add = LAYERS.add
    add("lstm", Component(RecurrentParams, lstm, "hidden", "LSTM over (steps, features); ignores padding"))
    add("gru", Component(RecurrentParams, gru, "hidden", "GRU over (steps, features); ignores padding"))
    add("pool", Component(PoolParams, pool, "mode", "(steps, features) → (features,): last | mean | max | attention"))
    add("step_conv", Component(StepConvParams, step_conv, "channels",
                               "conv1d + ReLU along (steps, features), e.g. character n-grams; ignores padding"))
    add("positional", Component(PositionalParams, positional, None, "learned position embeddings"))
    add("transformer_encoder", Component(EncoderParams, encoder, "heads",
                                         "pre-norm self-attention + MLP block; ignores padding"))

