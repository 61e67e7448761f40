"""CPU per request of dlforge's serving code alone, without HTTP: the part of bench_serve.py's `cpu ms/req` we own.

    PYTHONPATH=src python benchmarks/bench_serve_cpu.py            # tiny CNN, 20,000 requests a variant, 2 rounds

The app `create_app` returns is called as ASGI with in-memory receive/send from 64 concurrent tasks on uvloop,
in this process, one thread (the package is bench_serve.py's random-init cnn_small, one 1x1x8x8 JSON row per
request, max batch 32 / 5 ms). CPU time (time.process_time) over requests answered is robust to a noisy machine,
unlike req/s. Variants side by side, in alternating order: the fast path with and without the access log, the
routed FastAPI app alone (what infer cost before the fast path), and a constant-answer ASGI app (the floor of
this harness). ONNX Runtime's own time is printed too: it is in every dlforge row.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import MODELS, make_package, request_bytes
from dlforge.serve.app import create_app
from dlforge.serve.settings import Settings

CONCURRENCY = 64


async def _constant(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})


async def cpu_per_request(package: Path, variant: str, requests: int) -> tuple[float, float]:
    """(µs of CPU per request, µs of it in ONNX Runtime's run) for one variant."""
    app = create_app(Settings(path=package, max_batch_size=32, max_queue_delay_ms=5,
                              access_log=variant != "fast path, no access log"))
    target: Any = {"floor": _constant, "routed app": app.app}.get(variant, app)
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    life = asyncio.create_task(app.app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                       inbox.get, outbox.put))
    if (await outbox.get())["type"] != "lifespan.startup.complete":
        raise RuntimeError("the app did not start")
    body, headers = request_bytes(MODELS["cnn_small"], "json")
    scope = {"type": "http", "method": "POST", "path": "/v2/models/cnn_small/infer", "root_path": "",
             "query_string": b"", "client": ("127.0.0.1", 1), "http_version": "1.1", "scheme": "http",
             "headers": [(b"content-type", headers["Content-Type"].encode()),
                         (b"content-length", str(len(body)).encode())]}
    message = {"type": "http.request", "body": body, "more_body": False}
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return message

    async def send(m: dict[str, Any]) -> None:
        if m["type"] == "http.response.start":
            statuses.append(m["status"])

    async def client(n: int) -> None:
        for _ in range(n):
            await target(dict(scope), receive, send)

    session = app.state.serve.repository.get("cnn_small").runtime.session
    run, ort_seconds = session.run, 0.0

    def timed_run(*args: Any, **kwargs: Any) -> Any:
        nonlocal ort_seconds
        started = time.process_time()
        try:
            return run(*args, **kwargs)
        finally:
            ort_seconds += time.process_time() - started

    await asyncio.gather(*(client(100) for _ in range(CONCURRENCY)))  # warm-up
    session.run, ort_seconds = timed_run, 0.0
    per_client = requests // CONCURRENCY
    statuses.clear()
    started = time.process_time()
    await asyncio.gather(*(client(per_client) for _ in range(CONCURRENCY)))
    cpu = time.process_time() - started
    session.run = run
    if set(statuses) != {200}:
        raise RuntimeError(f"{variant}: statuses {sorted(set(statuses))}")
    await inbox.put({"type": "lifespan.shutdown"})
    await life
    done = per_client * CONCURRENCY
    return cpu / done * 1e6, ort_seconds / done * 1e6


def main() -> None:
    import uvloop

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    # The access lines go where the server sends them (a stream handler), here to /dev/null.
    access = logging.getLogger("dlforge.serve")
    access.addHandler(logging.StreamHandler(open(os.devnull, "w")))  # noqa: SIM115 (lives as long as the process)
    access.setLevel(logging.INFO)
    access.propagate = False
    variants = ["floor", "fast path, access log", "fast path, no access log", "routed app"]
    results: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        package = make_package("cnn_small", MODELS["cnn_small"], Path(tmp) / "cnn_small")
        for rnd in range(args.rounds):
            for v in variants if rnd % 2 == 0 else variants[::-1]:
                results[v].append(uvloop.run(cpu_per_request(package, v, args.requests)))
    print(f"{args.requests} requests a variant, {CONCURRENCY} concurrent, {args.rounds} rounds (medians), "
          f"one thread, no HTTP\n\n{'variant':<26} {'µs CPU/req':>11} {'of it ORT':>10} {'÷ access log on':>16}")
    base = statistics.median(r[0] for r in results["fast path, access log"])
    for v, runs in results.items():
        cpu, ort = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        print(f"{v:<26} {cpu:>11.1f} {ort:>10.1f} {cpu / base:>16.2f}")


if __name__ == "__main__":
    main()
