"""The engines behind the contract of dlforge.serve.contract: load once, `infer` many times.

`infer` takes and returns whole batches (rows on axis 0) and is called from the batcher's
executor thread, never on the event loop. ONNX Runtime is the shared engine; a task may bring its own
(dlforge.taskapi.Serving.runtime), such as a classifier's torch network or seq2seq's decoding loop.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from dlforge.registry import Registry
from dlforge.serve.contract import Runtime, Tensors, package_metadata
from dlforge.serve.protocol import DATATYPES, MetadataTensor
from dlforge.taskapi import get_serving

if TYPE_CHECKING:
    from dlforge.export.package import ModelPackage

RuntimeFactory = Callable[["ModelPackage", int], Runtime]
RUNTIMES: Registry[RuntimeFactory] = Registry("runtime")


def load_runtime(kind: str, package: ModelPackage, threads: int) -> Runtime:
    """Build the engine — the task's own (seq2seq's decoding loop, a classifier's torch network) or the shared
    one of `kind` — then run one warm-up batch so the first request is not the slow one."""
    own = get_serving(package.manifest.task).runtime(kind, package, threads)
    runtime = own if own is not None else RUNTIMES.get(kind)(package, threads)
    runtime.infer(warmup_batch(runtime.metadata.inputs))
    return runtime


def batch_latency(runtime: Runtime, rows: int = 1, repeats: int = 20, budget_s: float = 0.2) -> float:
    """Median seconds of one call with `rows` rows (after warm-up): sizes the queue delay, picks inline runs.

    At most `repeats` calls and, past three, no more than `budget_s` in all, so a heavy model does not
    stretch start-up (resnet18 at batch 32 takes ~0.3 s a call on one core)."""
    batch = warmup_batch(runtime.metadata.inputs, rows)
    times: list[float] = []
    while len(times) < repeats and (len(times) < 3 or sum(times) < budget_s):
        started = time.perf_counter()
        runtime.infer(batch)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def warmup_batch(inputs: list[MetadataTensor], rows: int = 1) -> Tensors:
    """Zeros of each declared input with every dynamic dimension set to `rows` (or 1)."""
    batch = {}
    for spec in inputs:
        shape = [rows if i == 0 and d == -1 else (1 if d == -1 else d) for i, d in enumerate(spec.shape)]
        batch[spec.name] = np.zeros(shape, DATATYPES[spec.datatype].dtype)
    return batch


class OnnxRuntime:
    """onnxruntime on CPU with a fixed thread budget (cores // workers, set by the server)."""

    def __init__(self, package: ModelPackage, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Idle ORT threads spin-wait by default, stealing the cores the HTTP side needs between batches.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(package.onnx_path), options, providers=["CPUExecutionProvider"]
        )
        self.metadata = package_metadata(package, "onnxruntime_onnx")
        self._names = [o.name for o in self.session.get_outputs()]

    def infer(self, batch: Tensors) -> Tensors:
        results = self.session.run(self._names, batch)
        return dict(zip(self._names, results, strict=True))


RUNTIMES.add("onnx", OnnxRuntime)
