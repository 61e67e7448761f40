"""Ray Serve vs the plain server on the same model: `dlforge serve` and `--backend ray` with 1 and 2 replicas.

    PYTHONPATH=src python benchmarks/bench_ray.py                          # cnn_small, concurrency 8 and 32
    PYTHONPATH=src python benchmarks/bench_ray.py --models resnet18 --duration 10

The same random-init package (bench_serve.make_package), the same binary-tensor requests and load generator
(wrk or httpx, pinned to the last core; every server shares the other cores). The Ray runs start a local
cluster through `dlforge serve --backend ray` (no --ray-address) and stop it after. Each replica gets one CPU and
one inference thread, like the plain server pinned to one core. On a 2-core machine 2 replicas add no compute:
the ratio to the plain server is the price of Ray's extra hop (HTTP proxy actor → replica actor), not its scaling.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

import bench_serve

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


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)  # the Ray variant deletes its applications and its local cluster
    try:
        proc.wait(180)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def bench(arch: str, root: Path, args: argparse.Namespace, load_cores: set[int]) -> list[dict[str, Any]]:
    shape = bench_serve.MODELS[arch]
    package = bench_serve.make_package(arch, shape, root / arch)
    rows = []
    for variant, extra in VARIANTS.items():
        port = free_port()
        proc = serve(package, extra, port, root / f"{arch}-{len(rows)}.log")
        try:
            url = f"http://127.0.0.1:{port}/v2/models/{arch}"
            bench_serve.run_load(url, shape, 4, 2.0, load_cores)  # warm-up: connections, first batches
            for c in args.concurrency:
                result = bench_serve.run_load(url, shape, c, args.duration, load_cores)
                rows.append({"model": arch, "server": variant, "concurrency": c, **result})
                print(f"  {arch} {variant} c={c}: {result['rps']:.0f} req/s", file=sys.stderr)
        finally:
            stop(proc)
    return rows


def print_table(rows: list[dict[str, Any]], server_cores: set[int], load_cores: set[int]) -> None:
    print(f"\nservers on cores {sorted(server_cores)}, load generator on {sorted(load_cores)}")
    print(f"{'model':10} {'server':16} {'conc':>4} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} "
          f"{'vs plain':>8}")
    plain = {(r["model"], r["concurrency"]): r["rps"] for r in rows if r["server"] == "plain"}
    for r in rows:
        ratio = r["rps"] / plain[(r["model"], r["concurrency"])]
        print(f"{r['model']:10} {r['server']:16} {r['concurrency']:4d} {r['rps']:8.0f} {r['p50']:8.1f} "
              f"{r['p99']:8.1f} {r['errors']:6d} {ratio:7.2f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["cnn_small"], choices=list(bench_serve.MODELS))
    p.add_argument("--concurrency", nargs="+", type=int, default=[8, 32])
    p.add_argument("--duration", type=float, default=8.0, help="seconds per measurement")
    args = p.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    load_cores = {cores[-1]}
    server_cores = set(cores[:-1]) or load_cores
    os.sched_setaffinity(0, server_cores)  # inherited by the servers and the Ray processes they start
    with tempfile.TemporaryDirectory() as tmp:
        rows = [row for arch in args.models for row in bench(arch, Path(tmp), args, load_cores)]
    print_table(rows, server_cores, load_cores)


if __name__ == "__main__":
    main()
