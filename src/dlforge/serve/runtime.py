"""The engines behind the contract of dlforge.serve.contract: load once, `infer` many times.

`infer` takes and returns whole batches (rows on axis 0) and is called from the batcher's
executor thread, never on the event loop. ONNX Runtime is the default engine; the torch engine
rebuilds the network with `rebuild_model`, as evaluate and export do (torch is imported only then).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from dlforge.registry import Registry
from dlforge.serve.contract import Runtime, Tensors, package_metadata
from dlforge.serve.protocol import DATATYPES, MetadataTensor

if TYPE_CHECKING:
    from dlforge.export.package import ModelPackage

RuntimeFactory = Callable[["ModelPackage", int], Runtime]
RUNTIMES: Registry[RuntimeFactory] = Registry("runtime")


def load_runtime(kind: str, package: ModelPackage, threads: int) -> Runtime:
    """Build the engine, then run one warm-up batch so the first request is not the slow one."""
    task_kind = f"{package.manifest.task}:{kind}"  # a task's own engine (e.g. seq2seq's decoding loop) first
    runtime = RUNTIMES.get(task_kind if task_kind in RUNTIMES else kind)(package, threads)
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


class TorchRuntime:
    """The trained network itself, rebuilt from the package's recipe (config.yaml, run.json, weights) like evaluate."""

    def __init__(self, package: ModelPackage, threads: int) -> None:
        import torch

        from dlforge.config import load_config
        from dlforge.export.errors import PackageError
        from dlforge.rundir import CONFIG, WEIGHTS, rebuild_model
        from dlforge.runinfo import RUN_INFO, RunInfo

        if package.manifest.task != "classification":  # its infer() returns logits and probabilities
            raise PackageError(f"{package.root}: --runtime torch serves classification packages; this one is "
                               f"task {package.manifest.task} — serve it with the default runtime (onnx)")
        if RUN_INFO not in package.manifest.files:
            raise PackageError(f"{package.root}: no {RUN_INFO} (exported by an older dlforge); re-export the run "
                               "with `dlforge export RUN_DIR` to serve it with the torch runtime")
        torch.set_num_threads(threads)
        cfg = load_config(package.path(CONFIG))
        self.net = rebuild_model(cfg, RunInfo.read(package.path(RUN_INFO)), package.path(WEIGHTS))
        self._torch: Any = torch
        self.metadata = package_metadata(package, "pytorch_safetensors")

    def infer(self, batch: Tensors) -> Tensors:
        torch = self._torch
        name = self.metadata.inputs[0].name
        with torch.inference_mode():
            logits = self.net(torch.from_numpy(batch[name]))
            probabilities = torch.softmax(logits, dim=-1)
        return {"logits": logits.numpy(), "probabilities": probabilities.numpy()}


def _seq2seq(kind: str) -> RuntimeFactory:
    def factory(package: ModelPackage, threads: int) -> Runtime:
        from dlforge.tasks import seq2seq_codec  # torch-free; its torch runtime imports torch when built

        return seq2seq_codec.Seq2SeqRuntime(package, threads) if kind == "onnx" else \
            seq2seq_codec.torch_runtime(package, threads)

    return factory


RUNTIMES.add("onnx", OnnxRuntime)
RUNTIMES.add("torch", TorchRuntime)
RUNTIMES.add("seq2seq:onnx", _seq2seq("onnx"))
RUNTIMES.add("seq2seq:torch", _seq2seq("torch"))
