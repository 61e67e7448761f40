"""Sequence-to-sequence architectures by name (`model.arch` with `task: seq2seq`), tiny presets beside them.

Vocabulary sizes come from the tokenizers, never from the user.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dlforge.config import ConfigError
from dlforge.config.common import ComponentSpec
from dlforge.config.components import Component
from dlforge.config.errors import problems_from
from dlforge.nn.seq2seq.base import Seq2SeqModel, Vocab
from dlforge.nn.seq2seq.layer_encoder import build_layer_encoder
from dlforge.nn.seq2seq.rnn import RnnSeq2Seq
from dlforge.nn.seq2seq.transformer import TransformerSeq2Seq
from dlforge.registry import Registry, RegistryError

SEQ2SEQ_MODELS: Registry[Component[Any]] = Registry("seq2seq architecture")


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RnnParams(Params):
    cell: Literal["gru", "lstm"] = "gru"
    attention: Literal["bahdanau", "luong"] = "bahdanau"
    embedding: int = Field(64, ge=1)
    hidden: int = Field(128, ge=1, description="per direction in the encoder; the decoder's size")
    layers: int = Field(1, ge=1, le=8)
    dropout: float = Field(0.1, ge=0, lt=1)
    encoder: list[ComponentSpec] | None = Field(
        None, description="a layer list over source ids replacing the bidirectional encoder (see docs/translation.md)")


class LstmParams(RnnParams):
    cell: Literal["gru", "lstm"] = "lstm"
    attention: Literal["bahdanau", "luong"] = "luong"


class TinyRnnParams(RnnParams):
    embedding: int = Field(8, ge=1)
    hidden: int = Field(16, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)


class TransformerParams(Params):
    d_model: int = Field(128, ge=2)
    heads: int = Field(4, ge=1)
    encoder_layers: int = Field(2, ge=1, le=24)
    decoder_layers: int = Field(2, ge=1, le=24)
    ffn: int = Field(256, ge=1, description="feed-forward width")
    dropout: float = Field(0.1, ge=0, lt=1)
    norm_first: bool = Field(True, description="pre-LayerNorm (trains more easily than post-norm)")
    max_positions: int = Field(256, ge=8, description="longest source or target in tokens")

    @model_validator(mode="after")
    def _heads_divide(self) -> TransformerParams:
        if self.d_model % self.heads or self.d_model % 2:
            raise ValueError(f"d_model {self.d_model} must be even and divisible by heads {self.heads} "
                             f"(e.g. d_model: {self.heads * 32})")
        return self


class TinyTransformerParams(TransformerParams):
    d_model: int = Field(16, ge=2)
    heads: int = Field(2, ge=1)
    encoder_layers: int = Field(1, ge=1, le=24)
    decoder_layers: int = Field(1, ge=1, le=24)
    ffn: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)


def rnn(p: RnnParams, vocab: Vocab) -> Seq2SeqModel:
    encoder = build_layer_encoder(p.encoder, vocab) if p.encoder is not None else None
    return RnnSeq2Seq(vocab, p.cell, p.attention, p.embedding, p.hidden, p.layers, p.dropout, encoder)


def transformer(p: TransformerParams, vocab: Vocab) -> Seq2SeqModel:
    return TransformerSeq2Seq(vocab, p.d_model, p.heads, p.encoder_layers, p.decoder_layers, p.ffn, p.dropout,
                              p.norm_first, p.max_positions)


_ENTRIES: list[tuple[str, type[Params], Callable[..., Seq2SeqModel], str]] = [
    ("gru_attention", RnnParams, rnn, "bidirectional GRU encoder, GRU decoder, Bahdanau attention"),
    ("lstm_attention", LstmParams, rnn, "bidirectional LSTM encoder, LSTM decoder, Luong attention (input feeding)"),
    ("rnn_attention_tiny", TinyRnnParams, rnn, "a few-thousand-parameter GRU with attention, for tests"),
    ("transformer", TransformerParams, transformer, "nn.Transformer encoder-decoder, sinusoidal positions"),
    ("transformer_tiny", TinyTransformerParams, transformer, "a one-layer Transformer, for tests"),
]
for name, params, build, doc in _ENTRIES:
    SEQ2SEQ_MODELS.add(name, Component(params, build, None, doc))


def seq2seq_params(arch: str, params: dict[str, Any]) -> tuple[Component[Any], BaseModel]:
    """The registered architecture and its validated settings; ConfigError names the key."""
    try:
        component = SEQ2SEQ_MODELS.get(arch)
    except RegistryError as exc:
        raise ConfigError([f"model.arch: {exc}"]) from None
    try:
        return component, component.params.model_validate(params)
    except ValidationError as exc:
        raise ConfigError(problems_from(exc, component.params, prefix="model.params")) from None


def build_seq2seq(arch: str, params: dict[str, Any], vocab: Vocab) -> Seq2SeqModel:
    component, validated = seq2seq_params(arch, params)
    model: Seq2SeqModel = component.build(validated, vocab)
    return model
