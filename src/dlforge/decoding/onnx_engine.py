"""The exported encoder and decoder-step graphs as a search `Engine`, on ONNX Runtime (no torch).

Graph contract (written by dlforge.tasks.seq2seq.graphs): the encoder takes `src` (B, S) int64 and returns
the state tensors; the step graph takes `tokens` (B,) and every state tensor, and returns
`log_probs` (B, V) plus `<name>_out` for each state tensor a step rewrites.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dlforge.decoding.search import State

SRC, TOKENS, LOG_PROBS, OUT_SUFFIX = "src", "tokens", "log_probs", "_out"


def ort_session(path: Path, threads: int = 0) -> Any:
    """A CPU session; threads 0 lets ONNX Runtime choose. Idle threads do not spin (servers share cores)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxEngine:
    def __init__(self, encoder: Path, step: Path, threads: int = 0) -> None:
        self.encoder, self.decoder = ort_session(encoder, threads), ort_session(step, threads)
        self.state_names = [o.name for o in self.encoder.get_outputs()]
        self.step_outputs = [o.name for o in self.decoder.get_outputs()]
        self.step_inputs = [i.name for i in self.decoder.get_inputs()]

    def encode(self, src: np.ndarray) -> State:
        return dict(zip(self.state_names, self.encoder.run(None, {SRC: src}), strict=True))

    def step(self, tokens: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        feeds = {TOKENS: tokens, **{name: state[name] for name in self.step_inputs if name != TOKENS}}
        outputs = dict(zip(self.step_outputs, self.decoder.run(None, feeds), strict=True))
        updated = {name.removesuffix(OUT_SUFFIX): value for name, value in outputs.items() if name != LOG_PROBS}
        return outputs[LOG_PROBS], {**state, **updated}

    def select(self, state: State, rows: np.ndarray) -> State:
        return {name: value[rows] for name, value in state.items()}
