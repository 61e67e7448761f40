"""The contract every sequence-to-sequence model keeps, so training, decoding and export share one path.

- `forward(src, tgt_in)` → logits (B, T, V): teacher forcing, one call per batch.
- `encode(src)` → state: named batch-first tensors; `static_keys` never change while decoding
  (encoder memory, its padding mask), `dynamic_keys` are rewritten by every step (RNN hidden
  state, Transformer self-attention cache).
- `step(tokens, state)` → (logits (B, V), new dynamic state): one decoder step.

Batch is axis 0 of every state tensor, so a beam search reorders any model's state the same way,
and the exported ONNX encoder / decoder-step graphs take and return exactly these tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from dlforge.preprocessing import Preprocessing, TranslationPreprocessing

State = dict[str, Tensor]


@dataclass(frozen=True)
class Vocab:
    """What a model needs from the tokenizers: vocabulary sizes and the padding id."""

    src_size: int
    tgt_size: int
    pad_id: int = 0
    max_source: int | None = None  # longest source in tokens (sizes position tables of a layer-list encoder)

    @classmethod
    def of(cls, preprocessing: Preprocessing) -> Vocab:
        """The sizes a run or package recorded for its tokenizers (its `preprocessing` section)."""
        p = TranslationPreprocessing.of(preprocessing, "a seq2seq model")
        return cls(p.source_vocab, p.target_vocab, p.pad_id, p.max_source_tokens)


class Seq2SeqModel(nn.Module):
    static_keys: tuple[str, ...] = ()
    dynamic_keys: tuple[str, ...] = ()
    # variable axes of each state tensor besides the batch (axis 0), e.g. {"memory": {1: "src_len"}}
    state_axes: ClassVar[dict[str, dict[int, str]]] = {}

    def __init__(self, vocab: Vocab) -> None:
        super().__init__()
        self.vocab = vocab

    def src_padding(self, src: Tensor) -> Tensor:
        """True where `src` is padding (the key_padding_mask convention of nn.MultiheadAttention)."""
        return src == self.vocab.pad_id

    def encode(self, src: Tensor) -> State:
        raise NotImplementedError

    def step(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        raise NotImplementedError

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        raise NotImplementedError
