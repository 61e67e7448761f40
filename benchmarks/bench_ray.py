"""Ray Serve vs the plain server on the same model: `dlforge serve` and `--backend ray` with 1 and 2 replicas.

    PYTHONPATH=src python benchmarks/bench_ray.py                          # cnn_small, concurrency 8 and 32
    PYTHONPATH=src python benchmarks/bench_ray.py --models resnet18 --duration 10

The same random-init package (bench_serve.make_package), the same binary-tensor requests and load generator
(wrk or httpx); nothing is pinned, so servers, Ray and the load generator share every core. The Ray runs share one local
cluster (`ray start --head`, stopped at the end) reached with `--ray-address`. Each replica gets one CPU and
one inference thread, like the plain server pinned to one core. On a 2-core machine 2 replicas add no compute:
the ratio to the plain server is the price of Ray's extra hop (HTTP proxy actor → replica actor), not its scaling.

The last rows answer "dlforge's batcher or Ray's `@serve.batch`?": a bench-only deployment (2 replicas) that
decodes with the same protocol functions, batches with `@serve.batch` (Ray's default 10 ms wait, max batch 32)
and runs the same ONNX Runtime session, started from this process on a local Ray cluster.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np

import bench_serve

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.ray_helpers import ray_head

HERE = Path(__file__).resolve()
VARIANTS = {"plain": [], "ray, 1 replica": ["--backend", "ray", "--replicas", "1"],
            "ray, 2 replicas": ["--backend", "ray", "--replicas", "2"]}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(package: Path, extra: list[str], port: int, log: Path) -> subprocess.Popen[bytes]:
    """`dlforge serve` with `extra` flags; returns once /v2/health/ready answers 200."""
    cmd = [sys.executable, "-m", "dlforge", "serve", str(package), "--port", str(port), "--replica-cpus", "0.5", *extra]
    if not extra:
        cmd = cmd[:-2]  # --replica-cpus is a Ray option
    env = {**os.environ, "PYTHONPATH": str(HERE.parents[1] / "src")}
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{' '.join(cmd)} exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=5).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(1)
    stop(proc)
    raise RuntimeError(f"{' '.join(cmd)} did not become ready")


def serve_batch_deployment() -> Any:
    """V2 infer through Ray's `@serve.batch` (bench only: the product keeps one request path, the app's)."""
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import Response

    from dlforge.export.package import load_package
    from dlforge.serve import protocol as v2
    from dlforge.serve.runtime import load_runtime
    from dlforge.serve.validate import ModelSignature, parse_infer

    @serve.deployment(max_ongoing_requests=32)
    class ServeBatch:
        def __init__(self, package: str) -> None:
            self.runtime = load_runtime("onnx", load_package(Path(package)), 1)
            self.name = load_package(Path(package)).manifest.name
            meta = self.runtime.metadata
            self.signature = ModelSignature(tuple(meta.inputs), tuple(o.name for o in meta.outputs))

        @serve.batch(max_batch_size=32)
        async def run(self, rows: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
            batch = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
            outputs = self.runtime.infer(batch)
            cuts = np.cumsum([len(next(iter(r.values()))) for r in rows])[:-1]
            parts = {k: np.split(v, cuts) for k, v in outputs.items()}
            return [{k: parts[k][i] for k in parts} for i in range(len(rows))]

        async def __call__(self, request: Request) -> Response:
            req, inputs = parse_infer(await request.body(),
                                      v2.parse_header_length(request.headers.get(v2.HEADER_LENGTH)), self.signature)
            outputs = await self.run(inputs)
            body, headers = v2.encode_response(self.name, "1", req.id, outputs, req.outputs,
                                               v2.wants_binary(req.parameters, "binary_data_output", False))
            return Response(body, headers=headers)

    return ServeBatch


@contextlib.contextmanager
def serve_batch_app(package: Path, arch: str, address: str, port: int, replicas: int) -> Iterator[None]:
    import ray
    from ray import serve

    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        deployment = serve_batch_deployment().options(num_replicas=replicas, ray_actor_options={"num_cpus": 0.5})
        serve.run(deployment.bind(str(package)), name="serve-batch", route_prefix=f"/v2/models/{arch}")
        yield
    finally:
        with contextlib.suppress(Exception):
            serve.delete("serve-batch")
        ray.shutdown()


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)  # the Ray variant deletes its applications first
    try:
        proc.wait(180)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def bench(arch: str, root: Path, args: argparse.Namespace, load_cores: set[int]) -> list[dict[str, Any]]:
    shape = bench_serve.MODELS[arch]
    package = bench_serve.make_package(arch, shape, root / arch)
    rows: list[dict[str, Any]] = []

    def measure(variant: str, url: str) -> None:
        bench_serve.run_load(url, shape, 4, 2.0, load_cores)  # warm-up: connections, first batches
        for c in args.concurrency:
            result = bench_serve.run_load(url, shape, c, args.duration, load_cores)
            rows.append({"model": arch, "server": variant, "concurrency": c, **result})
            print(f"  {arch} {variant} c={c}: {result['rps']:.0f} req/s", file=sys.stderr)

    with ray_head() as (address, _):  # one cluster, hence one Serve HTTP proxy port, for every Ray variant
        ray_port = free_port()
        for variant, extra in VARIANTS.items():
            port = ray_port if extra else free_port()
            flags = [*extra, "--ray-address", address] if extra else []
            proc = serve(package, flags, port, root / f"{arch}-{len(rows)}.log")
            try:
                measure(variant, f"http://127.0.0.1:{port}/v2/models/{arch}")
            finally:
                stop(proc)
        with serve_batch_app(package, arch, address, ray_port, 2):
            measure("ray @serve.batch, 2", f"http://127.0.0.1:{ray_port}/v2/models/{arch}")
    return rows


def print_table(rows: list[dict[str, Any]], server_cores: set[int], load_cores: set[int]) -> None:
    print(f"\nservers on cores {sorted(server_cores)}, load generator on {sorted(load_cores)}")
    print(f"{'model':10} {'server':20} {'conc':>4} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
          f"{'vs plain':>8}")
    plain = {(r["model"], r["concurrency"]): r["rps"] for r in rows if r["server"] == "plain"}
    for r in rows:
        ratio = r["rps"] / plain[(r["model"], r["concurrency"])]
        print(f"{r['model']:10} {r['server']:20} {r['concurrency']:4d} {r['rps']:8.0f} {r['p50']:8.1f} "
              f"{r['p99']:8.1f} {r['errors']:6d} {ratio:7.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["cnn_small"], choices=list(bench_serve.MODELS))
    p.add_argument("--concurrency", nargs="+", type=int, default=[8, 32])
    p.add_argument("--duration", type=float, default=8.0, help="seconds per measurement")
    args = p.parse_args()
    # Nothing is pinned: Ray's own processes (GCS, raylet, proxy, controller) need the cores to start at all on a
    # small machine, and the plain server must get the same cores as the replicas to be compared with them.
    cores = set(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        rows = [row for arch in args.models for row in bench(arch, Path(tmp), args, cores)]
    print_table(rows, cores, cores)


if __name__ == "__main__":
    main()
