"""ONNX Runtime session options for serving, measured side by side: what `dlforge serve` sets against the others.

    PYTHONPATH=src python benchmarks/bench_ort_options.py                 # resnet18 at 3x32x32 and the tiny CNN
    PYTHONPATH=src python benchmarks/bench_ort_options.py --rounds 3 --seconds 2

Each variant is a fresh InferenceSession on the same random-init package (as bench_serve.py builds them), timed
at batch 1 (median and p99 of single calls: the c=1 latency the server adds to) and at batch 32 (rows/s: the
throughput ceiling), in alternating order over rounds; the table shows medians and the ratio against the
server's configuration (`dlforge`: intra-op threads = usable cores, no spinning, sequential, memory arena on).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import MODELS, make_package
from dlforge.cores import usable_cores

# name → (intra-op threads or None for all usable cores, spinning, memory arena, graph optimisation level)
VARIANTS: dict[str, tuple[int | None, bool, bool, str]] = {
    "dlforge": (None, False, True, "all"),
    "spinning": (None, True, True, "all"),
    "no arena": (None, False, False, "all"),
    "1 thread": (1, False, True, "all"),
    "basic graph opt": (None, False, True, "basic"),
}


def session(model: Path, threads: int | None, spinning: bool, arena: bool, level: str) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or usable_cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.enable_cpu_mem_arena = arena
    options.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}[level]
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def measure(sess: Any, shape: tuple[int, ...], seconds: float) -> dict[str, float]:
    rng = np.random.default_rng(0)
    one, full = rng.random((1, *shape), dtype=np.float32), rng.random((32, *shape), dtype=np.float32)
    for x in (one, full):
        sess.run(None, {"input": x})
    times: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        sess.run(None, {"input": one})
        times.append(time.perf_counter() - t)
    rows, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        sess.run(None, {"input": full})
        rows += 32
    return {"p50": statistics.median(times) * 1000, "p99": statistics.quantiles(times, n=100)[98] * 1000,
            "rows": rows / (time.perf_counter() - t0)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seconds", type=float, default=1.5, help="per variant and measurement")
    args = p.parse_args()
    print(f"{usable_cores()} usable cores; {args.rounds} rounds, alternating order, medians")
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.models:
            package = make_package(arch, MODELS[arch], Path(tmp) / arch)
            results: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
            for rnd in range(args.rounds):
                for name in list(VARIANTS) if rnd % 2 == 0 else list(VARIANTS)[::-1]:
                    sess = session(package / "model.onnx", *VARIANTS[name])
                    results[name].append(measure(sess, MODELS[arch], args.seconds))
            base = {k: statistics.median(r[k] for r in results["dlforge"]) for k in ("p50", "p99", "rows")}
            print(f"\n{arch}: batch-1 latency and batch-32 throughput\n"
                  f"{'variant':<16} {'b1 p50 ms':>10} {'b1 p99 ms':>10} {'b32 rows/s':>11} {'÷ dlforge':>10}")
            for name, runs in results.items():
                m = {k: statistics.median(r[k] for r in runs) for k in ("p50", "p99", "rows")}
                print(f"{name:<16} {m['p50']:>10.3f} {m['p99']:>10.3f} {m['rows']:>11.1f} "
                      f"{m['rows'] / base['rows']:>10.2f}")


if __name__ == "__main__":
    main()
