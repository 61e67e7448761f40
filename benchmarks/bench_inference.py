"""Inference speed: torch eager vs ONNX Runtime fp32 vs ONNX Runtime int8, side by side.

Batch-1 latency (median over many runs) and batch-64 throughput, for the default digits CNN (1x8x8)
and resnet18 at 3x32x32 (random init: speed does not depend on the weights).

    PYTHONPATH=src python benchmarks/bench_inference.py [--runs 200] [--batch-runs 10]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from dlforge.config import ModelConfig
from dlforge.export.onnx import INPUT, export_onnx, session
from dlforge.export.quantize import quantize_onnx
from dlforge.nn import build_model

MODELS = {  # name: (model config, input shape)
    "cnn_small digits 1x8x8": (ModelConfig(arch="cnn_small", params={"channels": [32, 64], "hidden": 128}), (1, 8, 8)),
    "resnet18 3x32x32": (ModelConfig(arch="resnet18"), (3, 32, 32)),
}


def timed(fn: Callable[[], object], runs: int, warmup: int = 3, budget_s: float = 20.0) -> list[float]:
    """Seconds per call over `runs` calls (fewer if the time budget runs out), after warm-up."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < runs and (len(times) < 3 or time.perf_counter() < deadline):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def measure(run: Callable[[np.ndarray], object], x1: np.ndarray, x64: np.ndarray, args: argparse.Namespace
            ) -> tuple[float, float]:
    """(median batch-1 latency in ms, batch-64 throughput in samples/s)."""
    lat = statistics.median(timed(lambda: run(x1), args.runs)) * 1e3
    thr = len(x64) / statistics.median(timed(lambda: run(x64), args.batch_runs))
    return lat, thr


def runners(name: str, cfg: ModelConfig, shape: tuple[int, ...], tmp: Path) -> dict[str, Callable]:
    """torch eager, ORT fp32 and ORT int8 (static QDQ, random calibration) forward functions."""
    torch.manual_seed(0)
    net = build_model(cfg, shape, 10).eval()
    fp32, int8 = tmp / f"{abs(hash(name))}.onnx", tmp / f"{abs(hash(name))}.int8.onnx"
    export_onnx(net, torch.rand(4, *shape), fp32, opset=18)
    quantize_onnx(fp32, int8, np.random.default_rng(0).random((32, *shape), dtype=np.float32))
    s32, s8 = session(fp32), session(int8)

    def eager(x: np.ndarray) -> object:
        with torch.inference_mode():
            return net(torch.from_numpy(x))

    return {"torch eager": eager, "ORT fp32": lambda x: s32.run(None, {INPUT: x}),
            "ORT int8": lambda x: s8.run(None, {INPUT: x})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200, help="batch-1 calls per measurement (median)")
    parser.add_argument("--batch-runs", type=int, default=10, help="batch-64 calls per measurement (median)")
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch-1 median of {args.runs}, "
          f"batch-{args.batch} median of {args.batch_runs}\n")
    header = f"{'model':<24} {'runtime':<12} {'b1 ms':>8} {'vs eager':>9} {'b64 samples/s':>14} {'vs eager':>9}"
    print(header + "\n" + "-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        for name, (cfg, shape) in MODELS.items():
            rng = np.random.default_rng(0)
            x1, x64 = rng.random((1, *shape), dtype=np.float32), rng.random((args.batch, *shape), dtype=np.float32)
            base: tuple[float, float] | None = None
            for runtime, run in runners(name, cfg, shape, Path(tmp)).items():
                lat, thr = measure(run, x1, x64, args)
                base = base or (lat, thr)
                print(f"{name:<24} {runtime:<12} {lat:8.3f} {base[0] / lat:8.2f}x {thr:14.0f} {thr / base[1]:8.2f}x",
                      flush=True)


if __name__ == "__main__":
    main()
