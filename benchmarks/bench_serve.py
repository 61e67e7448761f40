"""Serving speed: `dlforge serve` against TorchServe, LitServe, a naive server, the bare-HTTP floor and the engine.

    PYTHONPATH=src python benchmarks/bench_serve.py                       # everything, 2 rounds: ~15 min
    PYTHONPATH=src python benchmarks/bench_serve.py --models cnn_small --servers floor dlforge-w1 --duration 2

Packages are random-init (build_model + export_onnx + write_manifest, as `dlforge export` writes them). Every
model server runs that package's model.onnx in ONNX Runtime with the session options `dlforge serve` uses, and
every batching server batches at most 32 requests / 5 ms (benchmarks/serve_peers.py says how each is set up).
Each server is started, checked (its answer must equal the engine's), loaded at each concurrency and
stopped, in turn; with --rounds N the order alternates and the tables show medians. Bodies are V2 JSON
(--body binary: the binary tensor extension; the peers take JSON only and are skipped).

The load generator is wrk (`apt install wrk`; a Lua script posts the body) or, without it, an httpx.AsyncClient
process. It runs pinned to the last core; the servers and the engine ceiling (in-process ONNX Runtime at the
best batch size, no HTTP) share the other cores (--no-pin: everything shares every core).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import serve_peers as peers
from serve_peers import DELAY_MS, MAX_BATCH, Server, ort_session, peer_skip_reason, threads_per_worker

MODELS = {"cnn_small": (1, 8, 8), "resnet18": (3, 32, 32)}
SERVERS = ["floor", "torchserve", "litserve", "naive", "dlforge", "dlforge-w1", "dlforge-w2"]
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


def sample(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(0).random((1, *shape), dtype=np.float32)


def request_bytes(shape: tuple[int, ...], body: str) -> tuple[bytes, dict[str, str]]:
    """One request for one row, asking for the probabilities: V2 JSON, or the binary tensor extension."""
    x = sample(shape)
    if body == "json":
        doc = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}],
               "outputs": [{"name": "probabilities"}]}
        return json.dumps(doc).encode(), {"Content-Type": "application/json"}
    blob = x.tobytes()
    header = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(blob)}}],
                         "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]}).encode()
    return header + blob, {"Inference-Header-Content-Length": str(len(header)),
                           "Content-Type": "application/octet-stream"}


async def load(url: str, shape: tuple[int, ...], body_kind: str, concurrency: int, duration: float) -> dict[str, Any]:
    import httpx

    body, headers = request_bytes(shape, body_kind)
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        end = time.monotonic() + duration

        async def worker() -> None:
            nonlocal errors
            while time.monotonic() < end:
                t = time.monotonic()
                r = await client.post(url, content=body, headers=headers)
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
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE")
local hl = os.getenv("BENCH_HEADER_LENGTH")
if hl ~= "" then wrk.headers["Inference-Header-Content-Length"] = hl end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests": %d, "seconds": %f, "p50": %f, "p99": %f, "errors": %d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3,
    e.status + e.connect + e.read + e.write + e.timeout))
end
"""


def wrk_load(url: str, shape: tuple[int, ...], body_kind: str, concurrency: int, duration: float,
             cores: set[int]) -> dict[str, Any]:
    """wrk, one thread, `concurrency` keep-alive connections, pinned to `cores`."""
    body, headers = request_bytes(shape, body_kind)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "body").write_bytes(body)
        (Path(tmp) / "post.lua").write_text(WRK_SCRIPT)
        env = {**os.environ, "BENCH_BODY": str(Path(tmp) / "body"), "BENCH_CONTENT_TYPE": headers["Content-Type"],
               "BENCH_HEADER_LENGTH": headers.get("Inference-Header-Content-Length", "")}
        out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{duration:g}s", "--timeout", "60s",
                              "-s", str(Path(tmp) / "post.lua"), url],
                             env=env, check=True, capture_output=True, text=True,
                             preexec_fn=lambda: os.sched_setaffinity(0, cores))
    stats = json.loads(out.stdout.strip().splitlines()[-1])
    return {"rps": stats["requests"] / stats["seconds"], "p50": stats["p50"], "p99": stats["p99"],
            "errors": stats["errors"]}


def run_load(url: str, shape: tuple[int, ...], args: argparse.Namespace, concurrency: int,
             cores: set[int]) -> dict[str, Any]:
    if shutil.which("wrk"):
        return wrk_load(url, shape, args.body, concurrency, args.duration, cores)
    cmd = [sys.executable, str(HERE), "--loadgen", url, "--shape", ",".join(map(str, shape)), "--body", args.body,
           "--concurrency", str(concurrency), "--duration", str(args.duration)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                         preexec_fn=lambda: os.sched_setaffinity(0, cores))
    return dict(json.loads(out.stdout))


# --- the engine and the servers ------------------------------------------------------------------------


class Engine:
    """In-process ONNX Runtime, no HTTP, configured like the server (same threads, no spinning)."""

    def __init__(self, package: Path, shape: tuple[int, ...]) -> None:
        self.session = ort_session(package, threads_per_worker(1))
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

    def batch1_ms(self) -> tuple[float, float]:
        """Median and p99 of single-row calls (up to 200 calls or 2 s): the latency the c=1 goal is against."""
        one = sample(self.shape)
        times = []
        for _ in range(200):
            t = time.perf_counter()
            self.session.run(None, {"input": one})
            times.append(time.perf_counter() - t)
            if sum(times) > 2:
                break
        return statistics.median(times) * 1000, statistics.quantiles(times, n=100)[98] * 1000

    def probabilities(self) -> np.ndarray:
        return np.asarray(self.session.run(["probabilities"], {"input": sample(self.shape)})[0])


def make_server(kind: str, arch: str, package: Path, tmp: Path, args: argparse.Namespace) -> Server:
    from tests.serve_helpers import free_port

    port = free_port()
    v2 = f"http://127.0.0.1:{port}/v2/models/{arch}/infer"
    if kind in ("floor", "naive", "litserve"):
        url = f"http://127.0.0.1:{port}/predict" if kind == "litserve" else v2
        return Server(kind, url, 1, [sys.executable, str(HERE), "--app", kind, str(package), "--port", str(port)])
    if kind == "torchserve":
        return peers.torchserve(arch, package, (port, free_port(), free_port()), args.torchserve_workers, tmp / kind)
    if kind == "dlforge":  # what a user gets: every default (workers, threads, batching) chosen by the server
        # Its workers are its own choice, at most one per core it may use (the bench pins it like the others).
        return Server(kind, v2, len(os.sched_getaffinity(0)),
                      [sys.executable, "-m", "dlforge", "serve", str(package), "--port", str(port)])
    workers = int(kind.removeprefix("dlforge-w"))
    return Server(kind, v2, workers, [sys.executable, "-m", "dlforge", "serve", str(package), "--port", str(port),
                                      "--workers", str(workers), "--max-batch-size", str(MAX_BATCH),
                                      "--max-queue-delay-ms", str(DELAY_MS)])


def probe(server: Server, shape: tuple[int, ...], body_kind: str) -> Any:
    """A real request: the response once the server answers 200, else None."""
    import httpx

    body, headers = request_bytes(shape, body_kind)
    try:
        r = httpx.post(server.url, content=body, headers=headers, timeout=30)
    except httpx.TransportError:
        return None
    return r if r.status_code == 200 else None


def check_answer(server: Server, response: Any, engine: Engine, body_kind: str) -> None:
    """The same model: the server's probabilities equal the in-process engine's (JSON answers)."""
    if server.name == "floor" or body_kind != "json":
        return
    got = np.asarray(response.json()["outputs"][0]["data"], dtype=np.float32)
    want = engine.probabilities().ravel()
    if got.shape != want.shape or not np.allclose(got, want, atol=1e-5):
        raise RuntimeError(f"{server.name} answered {got[:4]}..., the engine {want[:4]}...")


def bench_model(arch: str, root: Path, args: argparse.Namespace, cores: dict[str, set[int]]) -> list[dict[str, Any]]:
    """Per round: the engine ceiling (1 s), then each server in turn (the order alternates between rounds)."""
    shape = MODELS[arch]
    package = make_package(arch, shape, root / arch / "1")
    engine = Engine(package, shape)
    best, (batch1, batch1_p99) = engine.best_batch(), engine.batch1_ms()
    rows = []
    for rnd in range(args.rounds):
        ceiling = engine.rows_per_s(best, 1.0)
        for kind in args.servers if rnd % 2 == 0 else args.servers[::-1]:
            if kind == "floor" and arch != "cnn_small":  # its cost does not depend on the model: measured once
                continue
            work = root / f"{arch}-{kind}-{rnd}"
            work.mkdir()
            server = None
            try:
                server = make_server(kind, arch, package, work, args)
                peers.start(server, functools.partial(probe, server, shape, args.body), work / "server.log")
                check_answer(server, probe(server, shape, args.body), engine, args.body)
                for c in args.concurrency:
                    cpu_before = peers.cpu_seconds(server)
                    stats = run_load(server.url, shape, args, c, cores["load"])
                    answered = stats["rps"] * args.duration
                    cpu_ms = (peers.cpu_seconds(server) - cpu_before) * 1000 / max(answered, 1)
                    rows.append({"model": arch, "server": kind, "round": rnd, "concurrency": c, **stats,
                                 "cpu_ms": cpu_ms, "ceiling": ceiling, "best_batch": best, "batch1_ms": batch1,
                                 "batch1_p99": batch1_p99,
                                 "cores": min(server.cores, len(cores["server"]))})
            except (RuntimeError, subprocess.CalledProcessError) as e:  # one server failing loses only its rows
                print(f"FAILED {arch} {kind} round {rnd}: {e}", file=sys.stderr)
            finally:
                if server is not None:
                    peers.stop(server)
    return rows


# --- the tables ----------------------------------------------------------------------------------------


def median(rows: list[dict[str, Any]], key: str, **where: Any) -> float | None:
    vals = [r[key] for r in rows if all(r[k] == v for k, v in where.items())]
    return statistics.median(vals) if vals else None


def fmt(v: float | None, spec: str, unit: str = "") -> str:
    return "–" if v is None else f"{v:{spec}}{unit}"


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace, cores: dict[str, set[int]]) -> None:
    loadgen = "wrk" if shutil.which("wrk") else "httpx"
    print(f"servers and engine on cores {sorted(cores['server'])}, load generator ({loadgen}) on "
          f"{sorted(cores['load'])}; {args.body} bodies, {args.duration:g} s per point, {args.rounds} round(s), "
          f"medians; batching servers: max batch {MAX_BATCH}, {DELAY_MS:g} ms")
    print(f"\n{'model':<10} {'server':<11} {'conc':>4} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'cpu ms/req':>10} "
          f"{'err':>4}")
    for model, server, c in sorted({(r["model"], r["server"], r["concurrency"]) for r in rows},
                                   key=lambda k: (k[0], SERVERS.index(k[1]), k[2])):
        w = {"model": model, "server": server, "concurrency": c}
        errors = sum(r["errors"] for r in rows if all(r[k] == v for k, v in w.items()))
        print(f"{model:<10} {server:<11} {c:>4} {fmt(median(rows, 'rps', **w), '8.0f')} "
              f"{fmt(median(rows, 'p50', **w), '8.2f')} {fmt(median(rows, 'p99', **w), '8.2f')} "
              f"{fmt(median(rows, 'cpu_ms', **w), '10.3f')} {errors:>4}")
    tiny, big = "cnn_small", "resnet18"
    ceiling, batch1 = median(rows, "ceiling", model=big), median(rows, "batch1_ms", model=big)
    print(f"\n| server | tiny c=64 req/s | tiny p99 c=1 | resnet c=64 req/s (÷ ORT ceiling {fmt(ceiling, '.1f')}) "
          "| resnet p99 c=1 |\n|---|---|---|---|---|")
    servers = [s for s in SERVERS if any(r["server"] == s for r in rows)]
    for s in servers:
        rps = [r["rps"] for r in rows if r["server"] == s and r["model"] == tiny and r["concurrency"] == 64]
        spread = f" ({min(rps):,.0f}–{max(rps):,.0f})" if len(rps) > 1 else ""
        big64 = median(rows, "rps", server=s, model=big, concurrency=64)
        ratio = f" ({big64 / ceiling:.2f})" if big64 is not None and ceiling else ""
        big1 = fmt(median(rows, "p99", server=s, model=big, concurrency=1), ".1f", " ms")
        p99 = median(rows, "batch1_p99", model=big)
        engine = f" (engine batch-1: {batch1:.1f} ms, p99 {p99:.1f} ms)" if s.startswith("dlforge") and batch1 else ""
        print(f"| {s} | {fmt(median(rows, 'rps', server=s, model=tiny, concurrency=64), ',.0f')}{spread} "
              f"| {fmt(median(rows, 'p99', server=s, model=tiny, concurrency=1), '.2f', ' ms')} "
              f"| {fmt(big64, ',.1f')}{ratio} | {big1}{engine} |")
    print_goals(rows, servers, ceiling, batch1, median(rows, "batch1_p99", model=big))


def print_goals(rows: list[dict[str, Any]], servers: list[str], ceiling: float | None, batch1: float | None,
                batch1_p99: float | None) -> None:
    """The issue's goals as ratios measured in this run (– where a row it needs was not run)."""
    ts = median(rows, "rps", server="torchserve", model="cnn_small", concurrency=64)
    floor = median(rows, "rps", server="floor", model="cnn_small", concurrency=64)
    floor_cpu = median(rows, "cpu_ms", server="floor", model="cnn_small", concurrency=64)
    print("\n| server | tiny c=64 ÷ TorchServe (≥ 1.2) | tiny c=64 per core ÷ floor (≥ 0.5) | floor's CPU per request "
          "÷ server's | resnet p99 c=1 − engine batch-1 (≤ 1 ms) | … − engine batch-1 p99 | resnet c=64 ÷ ORT ceiling "
          "(≥ 0.95) |\n|---|---|---|---|---|---|---|")
    for s in (s for s in servers if s.startswith("dlforge")):
        tiny = median(rows, "rps", server=s, model="cnn_small", concurrency=64)
        used = median(rows, "cores", server=s, model="cnn_small", concurrency=64)
        p99 = median(rows, "p99", server=s, model="resnet18", concurrency=1)
        big = median(rows, "rps", server=s, model="resnet18", concurrency=64)
        cpu = median(rows, "cpu_ms", server=s, model="cnn_small", concurrency=64)
        print(f"| {s} | {fmt(tiny / ts if tiny and ts else None, '.2f')} "
              f"| {fmt(tiny / used / floor if tiny and used and floor else None, '.2f')} "
              f"| {fmt(floor_cpu / cpu if floor_cpu and cpu else None, '.2f')} "
              f"| {fmt(p99 - batch1 if p99 is not None and batch1 else None, '+.1f', ' ms')} "
              f"| {fmt(p99 - batch1_p99 if p99 is not None and batch1_p99 else None, '+.1f', ' ms')} "
              f"| {fmt(big / ceiling if big and ceiling else None, '.2f')} |")


def serve_app(kind: str, package: Path, port: int) -> None:
    """`--app KIND PACKAGE --port N`: run one of the comparison servers in this process."""
    if kind == "litserve":
        import litserve_app

        litserve_app.run(package, port)
        return
    import uvicorn

    app = peers.floor_app() if kind == "floor" else peers.naive_app(package)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--servers", nargs="+", default=SERVERS, choices=SERVERS)
    p.add_argument("--concurrency", nargs="+", type=int, default=[1, 64])
    p.add_argument("--duration", type=float, default=8.0, help="seconds per measurement")
    p.add_argument("--rounds", type=int, default=2, help="rounds; the server order alternates; medians are shown")
    p.add_argument("--body", choices=["json", "binary"], default="json", help="V2 JSON or the binary extension")
    p.add_argument("--torchserve-workers", type=int, default=2)
    p.add_argument("--no-pin", action="store_true", help="servers and load generator share every core")
    p.add_argument("--loadgen", help=argparse.SUPPRESS)
    p.add_argument("--shape", help=argparse.SUPPRESS)
    p.add_argument("--app", nargs=2, metavar=("KIND", "PACKAGE"), help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.loadgen:
        shape = tuple(int(s) for s in args.shape.split(","))
        print(json.dumps(asyncio.run(load(args.loadgen, shape, args.body, args.concurrency[0], args.duration))))
        return
    if args.app:
        serve_app(args.app[0], Path(args.app[1]), args.port)
        return
    sys.path.insert(0, str(HERE.parents[1]))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: each server's `finally` stops it
    for kind in list(args.servers):
        if reason := peer_skip_reason(kind, args.body):
            print(f"skipped {reason}")
            args.servers.remove(kind)
    everything = sorted(os.sched_getaffinity(0))
    if args.no_pin or len(everything) == 1:
        cores = {"server": set(everything), "load": set(everything)}
    else:
        cores = {"server": set(everything[:-1]), "load": {everything[-1]}}
    os.sched_setaffinity(0, cores["server"])  # inherited by the servers; the engine runs here too
    with tempfile.TemporaryDirectory() as tmp:
        rows = [row for arch in args.models for row in bench_model(arch, Path(tmp), args, cores)]
    print_table(rows, args, cores)


if __name__ == "__main__":
    main()
