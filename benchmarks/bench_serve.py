"""Serving throughput: `dlforge serve` vs the engine ceiling vs a naive one-request-one-inference server.

    PYTHONPATH=src python benchmarks/bench_serve.py              # default: cnn_small + resnet18, ~3 min
    PYTHONPATH=src python benchmarks/bench_serve.py --models cnn_small --duration 3

Packages are random-init (build_model + export_onnx + write_manifest); requests use the binary tensor
extension. The load generator is wrk (`apt install wrk`; a Lua script posts the binary body) or, without
it, an httpx.AsyncClient process. It runs pinned to the last core; the servers and the engine ceiling
(in-process ONNX Runtime at the best batch size, no HTTP) share the other cores, so served throughput is
compared with the engine on the same cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, Response

MODELS = {"cnn_small": (1, 8, 8), "resnet18": (3, 32, 32)}
HERE = Path(__file__).resolve()


def make_package(arch: str, shape: tuple[int, ...], root: Path) -> Path:
    """A random-init package: the same files and manifest as `dlforge export` writes."""
    import torch
    from safetensors.torch import save_file

    import dlforge
    from dlforge.config import dump_config, parse_config
    from dlforge.export.onnx import export_onnx
    from dlforge.export.package import write_manifest
    from dlforge.nn import build_model

    cfg = parse_config({"name": arch, "model": {"arch": arch}})
    net = build_model(cfg.model, shape, 10).eval()
    root.mkdir(parents=True)
    save_file(net.state_dict(), str(root / "model.safetensors"))
    (root / "config.yaml").write_text(dump_config(cfg))
    export_onnx(net, torch.rand(2, *shape), root / "model.onnx", 18)
    spec = lambda n: {"name": n, "datatype": "FP32", "shape": [-1, 10]}
    write_manifest(root, name=arch, version="1", task="classification", dlforge_version=dlforge.__version__,
                   torch_version=torch.__version__, labels=[str(i) for i in range(10)],
                   inputs=[{"name": "input", "datatype": "FP32", "shape": [-1, *shape]}],
                   outputs=[spec("logits"), spec("probabilities")],
                   preprocessing={"kind": "image", "size": list(shape[1:]), "channels": shape[0],
                                  "channel_order": "L" if shape[0] == 1 else "RGB", "scale": 1 / 255},
                   onnx={"opset": 18, "parity_max_abs_diff": 0.0, "tolerance": 1e-4, "parity_samples": 0},
                   metrics={}, quantized=None)
    return root


# --- load generator (its own process) -----------------------------------------------------------


def request_bytes(shape: tuple[int, ...]) -> tuple[bytes, dict[str, str]]:
    blob = np.random.default_rng(0).random((1, *shape), dtype=np.float32).tobytes()
    header = json.dumps({"inputs": [{"name": "input", "shape": [1, *shape], "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(blob)}}],
                         "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]}).encode()
    return header + blob, {"Inference-Header-Content-Length": str(len(header)),
                           "Content-Type": "application/octet-stream"}


async def load(url: str, shape: tuple[int, ...], concurrency: int, duration: float) -> dict[str, Any]:
    import httpx

    body, headers = request_bytes(shape)
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        end = time.monotonic() + duration

        async def worker() -> None:
            nonlocal errors
            while time.monotonic() < end:
                t = time.monotonic()
                r = await client.post("/infer", content=body, headers=headers)
                latencies.append(time.monotonic() - t)
                errors += r.status_code != 200

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    q = statistics.quantiles(latencies, n=100)
    return {"rps": len(latencies) / elapsed, "p50": q[49] * 1000, "p99": q[98] * 1000, "errors": errors}


WRK_SCRIPT = """
local f = io.open(os.getenv("BENCH_BODY"), "rb"); wrk.body = f:read("*all"); f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.headers["Inference-Header-Content-Length"] = os.getenv("BENCH_HEADER_LENGTH")
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests": %d, "seconds": %f, "p50": %f, "p99": %f, "errors": %d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3,
    e.status + e.connect + e.read + e.write + e.timeout))
end
"""


def wrk_load(url: str, shape: tuple[int, ...], concurrency: int, duration: float, cores: set[int]) -> dict[str, Any]:
    """wrk, one thread, `concurrency` keep-alive connections, pinned to `cores`."""
    body, headers = request_bytes(shape)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "body").write_bytes(body)
        (Path(tmp) / "post.lua").write_text(WRK_SCRIPT)
        env = {**os.environ, "BENCH_BODY": str(Path(tmp) / "body"),
               "BENCH_HEADER_LENGTH": headers["Inference-Header-Content-Length"]}
        out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{duration:g}s", "--timeout", "60s",
                              "-s", str(Path(tmp) / "post.lua"), f"{url}/infer"],
                             env=env, check=True, capture_output=True, text=True,
                             preexec_fn=lambda: os.sched_setaffinity(0, cores))
    stats = json.loads(out.stdout.strip().splitlines()[-1])
    return {"rps": stats["requests"] / stats["seconds"], "p50": stats["p50"], "p99": stats["p99"],
            "errors": stats["errors"]}


# --- servers ----------------------------------------------------------------------------------------


def server_session(package: Path) -> Any:
    """The ONNX Runtime session exactly as `dlforge serve` configures it (threads, no spinning)."""
    from dlforge.export.package import load_package
    from dlforge.serve.runtime import OnnxRuntime
    from dlforge.serve.settings import usable_cores

    return OnnxRuntime(load_package(package), usable_cores()).session


def naive_app(package: Path) -> Any:
    """One request, one session.run: no batching, no queue (the baseline)."""
    from dlforge.serve.protocol import encode_response, parse_header_length, parse_request_body

    session = server_session(package)
    app = FastAPI()

    @app.post("/v2/models/{model}/infer")
    async def infer(model: str, request: Request) -> Response:
        req, arrays = parse_request_body(await request.body(),
                                         parse_header_length(request.headers.get("inference-header-content-length")))
        logits, probs = session.run(None, {"input": arrays[0]})
        body, headers = encode_response(model, "1", req.id, {"logits": logits, "probabilities": probs},
                                        req.outputs, False)
        return Response(body, headers=headers)

    return app


def start(cmd: list[str], port: int) -> subprocess.Popen[bytes]:
    import httpx

    env = {**os.environ, "PYTHONPATH": str(HERE.parents[1] / "src")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            httpx.post(f"http://127.0.0.1:{port}/v2/models/x/infer", timeout=1)
            return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{cmd} did not start")


def run_load(url: str, shape: tuple[int, ...], concurrency: int, duration: float, cores: set[int]) -> dict[str, Any]:
    if shutil.which("wrk"):
        return wrk_load(url, shape, concurrency, duration, cores)
    cmd = [sys.executable, str(HERE), "--loadgen", url, "--shape", ",".join(map(str, shape)),
           "--concurrency", str(concurrency), "--duration", str(duration)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                         preexec_fn=lambda: os.sched_setaffinity(0, cores))
    return json.loads(out.stdout)


class Engine:
    """In-process ONNX Runtime, no HTTP, configured like the server (same threads, no spinning)."""

    def __init__(self, package: Path, shape: tuple[int, ...]) -> None:
        self.session = server_session(package)
        self.shape = shape

    def rows_per_s(self, batch: int, seconds: float) -> float:
        x = np.random.default_rng(0).random((batch, *self.shape), dtype=np.float32)
        self.session.run(None, {"input": x})
        n, t = 0, time.monotonic()
        while time.monotonic() - t < seconds:
            self.session.run(None, {"input": x})
            n += batch
        return n / (time.monotonic() - t)

    def best_batch(self) -> int:
        return max((1, 8, 32, 64), key=lambda b: self.rows_per_s(b, 0.5))

    def batch1_ms(self) -> float:
        one = np.random.default_rng(0).random((1, *self.shape), dtype=np.float32)
        times = []
        for _ in range(200):
            t = time.perf_counter()
            self.session.run(None, {"input": one})
            times.append(time.perf_counter() - t)
            if sum(times) > 2:
                break
        return statistics.median(times) * 1000


def bench_model(arch: str, root: Path, args: argparse.Namespace, load_cores: set[int]) -> list[dict[str, Any]]:
    """Per concurrency, side by side in time: the engine ceiling (1 s), then the served and the naive server
    (the machine is noisy: a ceiling measured minutes earlier would skew the ratios)."""
    from tests.serve_helpers import free_port

    shape = MODELS[arch]
    package = make_package(arch, shape, root / arch / "1")
    engine = Engine(package, shape)
    best, batch1 = engine.best_batch(), engine.batch1_ms()
    ports = {"served": free_port(), "naive": free_port()}
    commands = {"served": [sys.executable, "-m", "dlforge", "serve", str(package), "--port", str(ports["served"])],
                "naive": [sys.executable, str(HERE), "--naive", str(package), "--port", str(ports["naive"])]}
    procs: list[subprocess.Popen[bytes]] = []
    rows = []
    try:
        for kind, port in ports.items():
            procs.append(start(commands[kind], port))
        for c in args.concurrency:
            ceiling = engine.rows_per_s(best, 1.0)
            for kind, port in ports.items():
                stats = run_load(f"http://127.0.0.1:{port}/v2/models/{arch}", shape, c, args.duration, load_cores)
                rows.append({"model": arch, "server": kind, "concurrency": c, **stats, "ceiling": ceiling,
                             "best_batch": best, "batch1_ms": batch1})
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
    return rows


def print_table(rows: list[dict[str, Any]], server_cores: set[int], load_cores: set[int], loadgen: str) -> None:
    print(f"server and engine on cores {sorted(server_cores)}, load generator ({loadgen}) on {sorted(load_cores)}")
    for r in rows:
        if r["server"] == "served" and r["concurrency"] == 1:
            print(f"{r['model']}: engine batch-1 latency {r['batch1_ms']:.3f} ms; served c=1 p99 {r['p99']:.2f} ms "
                  f"= engine + {r['p99'] - r['batch1_ms']:.2f} ms")
    naive = {(r["model"], r["concurrency"]): r["rps"] for r in rows if r["server"] == "naive"}
    print(f"{'model':<10} {'server':<7} {'conc':>4} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'err':>4} "
          f"{'ceiling/s':>10} {'/ceiling':>8} {'/naive':>7}")
    for r in sorted(rows, key=lambda r: (r["model"], r["server"] != "served", r["concurrency"])):
        print(f"{r['model']:<10} {r['server']:<7} {r['concurrency']:>4} {r['rps']:>8.0f} {r['p50']:>8.1f} "
              f"{r['p99']:>8.1f} {r['errors']:>4} {r['ceiling']:>7.0f}@{r['best_batch']:<2} "
              f"{r['rps'] / r['ceiling']:>8.2f} {r['rps'] / naive[(r['model'], r['concurrency'])]:>7.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 64])
    p.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    p.add_argument("--loadgen", help=argparse.SUPPRESS)
    p.add_argument("--shape", help=argparse.SUPPRESS)
    p.add_argument("--naive", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.loadgen:
        shape = tuple(int(s) for s in args.shape.split(","))
        print(json.dumps(asyncio.run(load(args.loadgen, shape, args.concurrency[0], args.duration))))
    elif args.naive:
        import uvicorn

        uvicorn.run(naive_app(Path(args.naive)), host="127.0.0.1", port=args.port, log_level="warning")
    else:
        sys.path.insert(0, str(HERE.parents[1]))
        cores = sorted(os.sched_getaffinity(0))
        load_cores = {cores[-1]}
        server_cores = set(cores[:-1]) or load_cores  # one core: everything shares it
        os.sched_setaffinity(0, server_cores)  # inherited by the servers; the engine runs here too
        with tempfile.TemporaryDirectory() as tmp:
            rows = [row for arch in args.models for row in bench_model(arch, Path(tmp), args, load_cores)]
        print_table(rows, server_cores, load_cores, "wrk" if shutil.which("wrk") else "httpx")


if __name__ == "__main__":
    main()
