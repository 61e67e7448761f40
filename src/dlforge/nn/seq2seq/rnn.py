"""GRU / LSTM encoder-decoder with attention (Bahdanau additive or Luong general).

The encoder is bidirectional without packed sequences: the backward direction runs a forward RNN
over each sequence reversed within its own length (a gather), so padding never leaks into real
positions and the graph exports to ONNX as plain ops. Training runs the same `step` the decoder
runs at inference, so teacher-forced and step-by-step logits agree by construction.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from dlforge.nn.seq2seq.base import Seq2SeqModel, State, Vocab

Cell = Literal["gru", "lstm"]
Attention = Literal["bahdanau", "luong"]


def _rnn(cell: Cell, inputs: int, hidden: int, layers: int, dropout: float) -> nn.RNNBase:
    kind = nn.GRU if cell == "gru" else nn.LSTM
    return kind(inputs, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)


def reverse_within_length(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each row's first `length` steps, leaving padding in place (its own inverse)."""
    steps = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
    index = torch.where(steps < lengths.unsqueeze(1), lengths.unsqueeze(1) - 1 - steps, steps)
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class RnnEncoder(nn.Module):
    def __init__(self, vocab: Vocab, cell: Cell, emb: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab.src_size, emb, padding_idx=vocab.pad_id)
        self.forward_rnn = _rnn(cell, emb, hidden, layers, dropout)
        self.backward_rnn = _rnn(cell, emb, hidden, layers, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, src: Tensor, padding: Tensor) -> tuple[Tensor, Tensor]:
        """(memory (B, S, 2H), summary (B, 2H): last real step of each direction)."""
        lengths = (~padding).sum(1).clamp_min(1)
        x = self.dropout(self.embed(src))
        fwd, _ = self.forward_rnn(x)
        bwd = reverse_within_length(self.backward_rnn(reverse_within_length(x, lengths))[0], lengths)
        last = (lengths - 1).view(-1, 1, 1).expand(-1, 1, fwd.shape[-1])
        summary = torch.cat([fwd.gather(1, last).squeeze(1), bwd[:, 0]], dim=-1)
        return self.dropout(torch.cat([fwd, bwd], dim=-1)), summary


class RnnSeq2Seq(Seq2SeqModel):
    """Bidirectional encoder → attentional decoder; state = hidden (+ cell, + Luong's input feed)."""

    static_keys = ("memory", "keys", "src_padding")
    state_axes: ClassVar[dict[str, dict[int, str]]] = {key: {1: "src_len"} for key in static_keys}

    def __init__(self, vocab: Vocab, cell: Cell = "gru", attention: Attention = "bahdanau", emb: int = 64,
                 hidden: int = 128, layers: int = 1, dropout: float = 0.1,
                 encoder: tuple[nn.Module, int] | None = None) -> None:
        """`encoder`: (a module returning (memory, summary) like RnnEncoder, its memory width) replacing the
        built-in bidirectional encoder — a layer list from `model.params.encoder`."""
        super().__init__(vocab)
        self.cell, self.attention, self.layers, self.hidden = cell, attention, layers, hidden
        if encoder is None:
            self.encoder: nn.Module = RnnEncoder(vocab, cell, emb, hidden, layers, dropout)
            memory = 2 * hidden
        else:
            self.encoder, memory = encoder
        self.bridge = nn.Linear(memory, layers * hidden)
        self.embed = nn.Embedding(vocab.tgt_size, emb, padding_idx=vocab.pad_id)
        self.key = nn.Linear(memory, hidden, bias=attention == "bahdanau")
        if attention == "bahdanau":
            self.query = nn.Linear(hidden, hidden, bias=False)
            self.energy = nn.Linear(hidden, 1, bias=False)
        feed = hidden if attention == "luong" else memory  # what joins the embedding as RNN input
        self.rnn = _rnn(cell, emb + feed, hidden, layers, dropout)
        self.combine = nn.Linear(hidden + memory, hidden)
        self.out = nn.Linear(hidden, vocab.tgt_size)
        self.dropout = nn.Dropout(dropout)
        self.dynamic_keys = ("hidden",) + (("cell",) if cell == "lstm" else ()) + (
            ("feed",) if attention == "luong" else ())

    def encode(self, src: Tensor) -> State:
        padding = self.src_padding(src)
        memory, summary = self.encoder(src, padding)
        hidden = torch.tanh(self.bridge(summary)).view(-1, self.layers, self.hidden)
        state = {"memory": memory, "keys": self.key(memory), "src_padding": padding, "hidden": hidden}
        if self.cell == "lstm":
            state["cell"] = torch.zeros_like(hidden)
        if self.attention == "luong":
            state["feed"] = torch.zeros_like(hidden[:, 0])
        return state

    def _attend(self, query: Tensor, state: State) -> Tensor:
        """Context vector (B, 2H) for `query` (B, H) over the encoder memory; padding gets no weight."""
        if self.attention == "bahdanau":
            scores = self.energy(torch.tanh(state["keys"] + self.query(query).unsqueeze(1))).squeeze(-1)
        else:
            scores = torch.bmm(state["keys"], query.unsqueeze(-1)).squeeze(-1)
        weights = torch.softmax(scores.masked_fill(state["src_padding"], -1e4), dim=-1)
        return torch.bmm(weights.unsqueeze(1), state["memory"]).squeeze(1)

    def step(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        x = self.dropout(self.embed(tokens))
        hidden = state["hidden"].transpose(0, 1).contiguous()  # nn.RNN wants (layers, B, H)
        context = self._attend(state["hidden"][:, -1], state) if self.attention == "bahdanau" else None
        x = torch.cat([x, context if context is not None else state["feed"]], dim=-1).unsqueeze(1)
        if self.cell == "lstm":
            out, (h, c) = self.rnn(x, (hidden, state["cell"].transpose(0, 1).contiguous()))
            new: State = {"hidden": h.transpose(0, 1), "cell": c.transpose(0, 1)}
        else:
            out, h = self.rnn(x, hidden)
            new = {"hidden": h.transpose(0, 1)}
        out = out.squeeze(1)
        if context is None:
            context = self._attend(out, state)
        combined = torch.tanh(self.combine(torch.cat([out, context], dim=-1)))
        if self.attention == "luong":
            new["feed"] = combined
        return self.out(self.dropout(combined)), new

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        state = self.encode(src)
        logits = []
        for t in range(tgt_in.shape[1]):
            step_logits, new = self.step(tgt_in[:, t], state)
            state = {**state, **new}
            logits.append(step_logits)
        return torch.stack(logits, dim=1)
