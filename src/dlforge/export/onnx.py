"""torch → ONNX with dynamic batch (and sequence) axes, checked by onnx.checker and against torch.

We use the torch.export-based exporter (`dynamo=True`): the TorchScript one is deprecated in torch 2.13.
The graph also outputs softmax probabilities so servers need no post-processing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from dlforge.export.errors import ExportError
from dlforge.export.quiet import quiet_exporter

if TYPE_CHECKING:
    import onnxruntime as ort

INPUT, LOGITS, PROBS = "input", "logits", "probabilities"
AXIS_NAMES = {0: "batch", 1: "sequence"}


class WithProbabilities(nn.Module):
    """The network plus a softmax, so the exported graph returns (logits, probabilities)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.net(x)
        return logits, torch.softmax(logits, dim=-1)


def dynamic_dims(sample_shape: list[int], integer_input: bool) -> list[int]:
    """Which input axes are dynamic: batch always; the sequence axis of token / (steps, features) inputs."""
    dims = [0]
    if integer_input or len(sample_shape) == 2:
        dims.append(1)
    return dims


@contextlib.contextmanager
def fresh_rnn_dispatch() -> Iterator[None]:
    """Forget the Python dispatcher's cached GRU/LSTM kernels around an export.

    torch.onnx swaps in a while-loop decomposition of aten.gru/aten.lstm for dynamic shapes by editing the
    op's `py_kernels`, but not its `_dispatch_cache`: once an earlier export in this process had cached the
    unrolled decomposition, the next one unrolled the loop over the example's length, failed the dynamic
    `sequence` constraint, and the exporter quietly retried with the axis fixed (torch 2.13). An empty cache
    makes the dispatcher look the kernel up again, inside the exporter's patch."""
    ops = (torch.ops.aten.gru.input, torch.ops.aten.lstm.input)
    for op in ops:
        op._dispatch_cache.clear()
    try:
        yield
    finally:
        for op in ops:
            op._dispatch_cache.clear()


def export_onnx(net: nn.Module, example: Tensor, path: Path, opset: int, integer_input: bool = False) -> None:
    """Write a single self-contained ONNX file for `net` (eval mode) and validate it with onnx.checker.

    The batch axis (and the sequence axis of token / (steps, features) inputs) is declared dynamic and
    checked to be symbolic in the written graph: a graph fixed to the example's length must never ship."""
    dyn = dynamic_dims(list(example.shape[1:]), integer_input)
    shapes = {"x": {d: torch.export.Dim(AXIS_NAMES[d]) for d in dyn}}
    example = example[:2] if example.shape[0] >= 2 else torch.cat([example, example])  # batch 1 specialises
    with quiet_exporter(), fresh_rnn_dispatch():
        torch.onnx.export(WithProbabilities(net).eval(), (example,), str(path), dynamo=True, opset_version=opset,
                          input_names=[INPUT], output_names=[LOGITS, PROBS], dynamic_shapes=shapes,
                          external_data=False, verbose=False)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{path.name}: onnx.checker rejected the exported model: {exc}") from None
    check_dynamic_axes(path, {d: AXIS_NAMES[d] for d in dyn})


def input_dims(path: Path) -> list[int | str]:
    """The graph input's dims: an int where fixed, the symbol's name where dynamic."""
    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return [d.dim_param if d.HasField("dim_param") else d.dim_value for d in dims]


def check_dynamic_axes(path: Path, axes: dict[int, str]) -> None:
    """ExportError unless every axis in `axes` is symbolic in the written graph: the manifest promises -1
    there, so a server would otherwise refuse (or an engine fail on) every other batch size or length."""
    dims = input_dims(path)
    fixed = [f"{name} (axis {a}) = {dims[a]}" for a, name in axes.items() if not isinstance(dims[a], str)]
    if fixed:
        raise ExportError(f"{path.name}: the exporter fixed {', '.join(fixed)} of input {dims}; that axis must "
                          "stay dynamic (a layer that needs a fixed length, e.g. flatten over the steps, "
                          "cannot take variable-length sequences)")


def session(path: Path) -> ort.InferenceSession:
    """A CPU ONNX Runtime session (import deferred: onnxruntime is heavy)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_onnx(sess: ort.InferenceSession, x: np.ndarray, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(logits, probabilities) of an ORT session over `x`, in batches."""
    outs = [sess.run([LOGITS, PROBS], {INPUT: x[i:i + batch]}) for i in range(0, len(x), batch)]
    return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])


def parity_diff(net: nn.Module, onnx_path: Path, x: Tensor) -> float:
    """Max |onnx - torch| over logits and probabilities on samples `x`."""
    with torch.no_grad():
        logits, probs = WithProbabilities(net).eval()(x)
    o_logits, o_probs = run_onnx(session(onnx_path), x.numpy())
    return float(max(np.abs(o_logits - logits.numpy()).max(), np.abs(o_probs - probs.numpy()).max()))


def check_parity(net: nn.Module, onnx_path: Path, x: Tensor, tolerance: float) -> float:
    """The parity diff, or ExportError if it exceeds `tolerance` (a broken export must never ship)."""
    diff = parity_diff(net, onnx_path, x)
    if not diff <= tolerance:
        raise ExportError(f"{onnx_path.name}: ONNX Runtime differs from torch by {diff:.3g} on {len(x)} "
                          f"validation samples (tolerance {tolerance:g}); set export.tolerance if this is expected")
    return diff
