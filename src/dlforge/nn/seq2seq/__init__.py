"""Sequence-to-sequence models: RNN encoder-decoders with attention and the Transformer."""

from dlforge.nn.seq2seq.archs import SEQ2SEQ_MODELS, build_seq2seq, seq2seq_params
from dlforge.nn.seq2seq.base import Seq2SeqModel, State, Vocab

__all__ = ["SEQ2SEQ_MODELS", "Seq2SeqModel", "State", "Vocab", "build_seq2seq", "seq2seq_params"]
