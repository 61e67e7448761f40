"""Transformer encoder-decoder (`nn.Transformer`) with an incremental decoder step.

Training runs nn.Transformer on the whole target under a causal mask. Decoding runs one position
at a time through the same layers' submodules, keeping a cache of each layer's self-attention
inputs (B, layers, T, d): new positions attend to the cache instead of recomputing the prefix.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from dlforge.nn.seq2seq.base import Seq2SeqModel, State, Vocab


def sinusoids(positions: int, dim: int) -> Tensor:
    """The fixed positional encodings of "Attention Is All You Need" (positions, dim)."""
    pos = torch.arange(positions, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(positions, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return table


class TransformerSeq2Seq(Seq2SeqModel):
    static_keys = ("memory", "src_padding")
    dynamic_keys = ("cache",)
    state_axes: ClassVar[dict[str, dict[int, str]]] = {
        "memory": {1: "src_len"}, "src_padding": {1: "src_len"}, "cache": {2: "steps"}}

    def __init__(self, vocab: Vocab, d_model: int = 128, heads: int = 4, encoder_layers: int = 2,
                 decoder_layers: int = 2, ffn: int = 256, dropout: float = 0.1, norm_first: bool = True,
                 max_positions: int = 256) -> None:
        super().__init__(vocab)
        self.d_model, self.max_positions = d_model, max_positions
        enc = nn.TransformerEncoderLayer(d_model, heads, ffn, dropout, batch_first=True, norm_first=norm_first)
        dec = nn.TransformerDecoderLayer(d_model, heads, ffn, dropout, batch_first=True, norm_first=norm_first)
        self.transformer = nn.Transformer(
            d_model, heads, batch_first=True, norm_first=norm_first,
            # built here to turn off nested tensors (not exportable, and moot with norm_first)
            custom_encoder=nn.TransformerEncoder(enc, encoder_layers, nn.LayerNorm(d_model),
                                                 enable_nested_tensor=False),
            custom_decoder=nn.TransformerDecoder(dec, decoder_layers, nn.LayerNorm(d_model)))
        self.src_embed = nn.Embedding(vocab.src_size, d_model, padding_idx=vocab.pad_id)
        self.tgt_embed = nn.Embedding(vocab.tgt_size, d_model, padding_idx=vocab.pad_id)
        self.positions: Tensor
        self.register_buffer("positions", sinusoids(max_positions, d_model), persistent=False)
        self.dropout = nn.Dropout(dropout)
        self.generator = nn.Linear(d_model, vocab.tgt_size)
        self.norm_first = norm_first

    def _embed(self, table: nn.Embedding, tokens: Tensor, start: int = 0) -> Tensor:
        positions = self.positions[start:start + tokens.shape[1]]
        return self.dropout(table(tokens) * math.sqrt(self.d_model) + positions)

    def encode(self, src: Tensor) -> State:
        padding = self.src_padding(src)
        memory = self.transformer.encoder(self._embed(self.src_embed, src), src_key_padding_mask=padding)
        layers = len(self.transformer.decoder.layers)
        cache = memory.new_zeros(src.shape[0], layers, 0, self.d_model)
        return {"memory": memory, "src_padding": padding, "cache": cache}

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        padding = self.src_padding(src)
        causal = nn.Transformer.generate_square_subsequent_mask(tgt_in.shape[1], device=src.device)
        out = self.transformer(self._embed(self.src_embed, src), self._embed(self.tgt_embed, tgt_in),
                               tgt_mask=causal, tgt_is_causal=True, src_key_padding_mask=padding,
                               memory_key_padding_mask=padding)
        return self.generator(out)

    def step(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        cache = state["cache"]
        x = self._embed(self.tgt_embed, tokens.unsqueeze(1), cache.shape[2])
        history = []
        for i, layer in enumerate(self.transformer.decoder.layers):
            x, h = self._layer_step(layer, x, cache[:, i], state)
            history.append(h)
        norm = self.transformer.decoder.norm
        x = norm(x) if norm is not None else x
        return self.generator(x[:, 0]), {"cache": torch.stack(history, dim=1)}

    def _layer_step(self, layer: nn.TransformerDecoderLayer, x: Tensor, cache: Tensor,
                    state: State) -> tuple[Tensor, Tensor]:
        """nn.TransformerDecoderLayer.forward for one new position, attending to the cached prefix."""
        attn_in = layer.norm1(x) if self.norm_first else x
        history = torch.cat([cache, attn_in], dim=1)
        sa = layer.dropout1(layer.self_attn(attn_in, history, history, need_weights=False)[0])
        x = x + sa if self.norm_first else layer.norm1(x + sa)
        q = layer.norm2(x) if self.norm_first else x
        ca = layer.multihead_attn(q, state["memory"], state["memory"], key_padding_mask=state["src_padding"],
                                  need_weights=False)[0]
        x = x + layer.dropout2(ca) if self.norm_first else layer.norm2(x + layer.dropout2(ca))
        ff_in = layer.norm3(x) if self.norm_first else x
        ff = layer.dropout3(layer.linear2(layer.dropout(layer.activation(layer.linear1(ff_in)))))
        x = x + ff if self.norm_first else layer.norm3(x + ff)
        return x, history
