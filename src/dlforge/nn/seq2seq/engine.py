"""A torch model as a search `Engine`: state stays on the model's device, log-probs come back as numpy."""

from __future__ import annotations

import numpy as np
import torch

from dlforge.nn.seq2seq.base import Seq2SeqModel, State


class TorchEngine:
    def __init__(self, model: Seq2SeqModel, device: torch.device | None = None) -> None:
        self.model = model
        self.device = device or next(model.parameters()).device

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    @torch.inference_mode()
    def encode(self, src: np.ndarray) -> State:
        return self.model.encode(self._tensor(src))

    @torch.inference_mode()
    def step(self, tokens: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        logits, updated = self.model.step(self._tensor(tokens), state)
        return torch.log_softmax(logits.float(), dim=-1).cpu().numpy(), {**state, **updated}

    @torch.inference_mode()
    def select(self, state: State, rows: np.ndarray) -> State:
        index = self._tensor(rows)
        return {name: value.index_select(0, index) for name, value in state.items()}
