"""Overload: what admitted requests wait, and how fast the rest are refused, at a concurrency beyond capacity.

    PYTHONPATH=src python benchmarks/bench_overload.py tests/fixtures/packages_v0/digits_cnn -c 1 64 512 2048
    PYTHONPATH=src python benchmarks/bench_overload.py PKG --grpc --calls 2000 --channels 4
    PYTHONPATH=src python benchmarks/bench_overload.py PKG -c 512 --serve-flags "--max-inflight 100000"
    PYTHONPATH=src python benchmarks/bench_overload.py tests/fixtures/packages_v0/langid_rnn --soak 20 --texts 65536

Starts `dlforge serve PKG` with default settings (plus --serve-flags) on a free port, then for each
concurrency C runs C keep-alive HTTP/1.1 clients (raw asyncio sockets: a Python HTTP client would cost
more CPU than the server) posting one digit as V2 JSON for --seconds, while a probe times
/v2/health/ready every 100 ms. Prints, per C: answers by status, 503s without Retry-After, transport
errors, the 200s' p50/p99/max, the 503s' p99 and the slowest health probe. With --grpc: --calls
concurrent ModelInfer calls (and as many ServerLive) spread over --channels grpc.aio channels, by code.
With --soak N (a text classifier package): N requests of --texts strings each, one at a time, and the
server's resident size (MiB) at start and 0.5 s after each.
The load generator shares the machine with the server: on 2 cores its own CPU time is in the latencies.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BODY = json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32",
                               "data": np.random.default_rng(0).random(64).round(3).tolist()}]}).encode()


POLITE = False  # --polite: clients wait Retry-After after a 503 (wrk and most load generators do not)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(package: str, port: int, grpc_port: int | None, flags: list[str],
                 log: Path | None = None) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "dlforge", "serve", package, "--port", str(port), *flags]
    cmd += ["--grpc-port", str(grpc_port)] if grpc_port else []
    cmd += [] if log else ["--no-access-log"]
    out = log.open("ab") if log else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdout=out, stderr=out, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
                if s.recv(100).startswith(b"HTTP/1.1 200"):
                    return proc
        except OSError:
            time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit("the server did not start")


async def http_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str,
                       body: bytes | None) -> tuple[int, dict[str, str]]:
    method = b"POST" if body is not None else b"GET"
    head = b"%s %s HTTP/1.1\r\nHost: x\r\n" % (method, path.encode())
    if body is not None:
        head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
    writer.write(head + b"\r\n" + (body or b""))
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    await reader.readexactly(int(headers.get("content-length", "0")))
    return int(lines[0].split()[1]), headers


async def client(port: int, until: float, results: list[tuple[int, float, bool]], errors: collections.Counter) -> None:
    conn = None
    while time.monotonic() < until:
        try:
            if conn is None:
                conn = await asyncio.open_connection("127.0.0.1", port)
            started = time.monotonic()
            status, headers = await http_request(*conn, "/v2/models/digits_cnn/infer", BODY)
            results.append((status, time.monotonic() - started, "retry-after" in headers))
            if POLITE and status == 503:  # a client that honours Retry-After
                await asyncio.sleep(float(headers.get("retry-after", "1")))
            if headers.get("connection", "").lower() == "close":
                conn[1].close()
                conn = None
        except (OSError, asyncio.IncompleteReadError) as exc:
            errors[type(exc).__name__] += 1
            if conn is not None:
                conn[1].close()
            conn = None
            await asyncio.sleep(0.05)
    if conn is not None:
        conn[1].close()


async def probe(port: int, until: float, seconds: list[float]) -> None:
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            conn = await asyncio.open_connection("127.0.0.1", port)
            await http_request(*conn, "/v2/health/ready", None)
            conn[1].close()
        except OSError:
            pass
        seconds.append(time.monotonic() - started)
        await asyncio.sleep(0.1)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def server_side(log: Path, offset: int) -> str:
    """The server's own latencies (its access log) for the infer route since `offset`: p50/p99 per status."""
    seconds: dict[int, list[float]] = {}
    with log.open("rb") as f:
        f.seek(offset)
        for line in f.read().decode(errors="replace").splitlines():
            if line.startswith('{"') and '"/v2/models/' in line:
                entry = json.loads(line)
                seconds.setdefault(entry["status"], []).append(entry["ms"] / 1000)
    return "  server-side: " + ", ".join(f"{status}: p50 {pct(v, 50):.1f} p99 {pct(v, 99):.1f} ms"
                                          for status, v in sorted(seconds.items()))


async def load(port: int, clients: int, seconds: float) -> str:
    results: list[tuple[int, float, bool]] = []
    errors: collections.Counter[str] = collections.Counter()
    health: list[float] = []
    until = time.monotonic() + seconds
    await asyncio.gather(probe(port, until, health), *(client(port, until, results, errors) for _ in range(clients)))
    by = collections.Counter(status for status, _, _ in results)
    ok = [t for status, t, _ in results if status == 200]
    shed = [t for status, t, _ in results if status == 503]
    bare = sum(1 for status, _, retry in results if status == 503 and not retry)
    return (f"c={clients:5d}  {dict(sorted(by.items()))}  503 w/o Retry-After {bare}  errors {dict(errors)}  "
            f"200: {len(ok) / seconds:6.0f}/s p50 {pct(ok, 50):6.1f} p99 {pct(ok, 99):6.1f} max {pct(ok, 100):6.1f} ms"
            f"  503 p99 {pct(shed, 99):6.1f} ms  health max {max(health, default=0) * 1000:6.1f} ms")


async def grpc_burst(port: int, calls: int, channels: int) -> str:
    import grpc

    from dlforge.serve.grpc.proto import grpc_predict_v2_pb2 as pb

    x = np.random.default_rng(0).random((1, 1, 8, 8), dtype=np.float32)
    request = pb.ModelInferRequest(model_name="digits_cnn", inputs=[pb.ModelInferRequest.InferInputTensor(
        name="input", datatype="FP32", shape=[1, 1, 8, 8])], raw_input_contents=[x.tobytes()])
    chans = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(channels)]
    service = "/inference.GRPCInferenceService/"
    codes: collections.Counter[str] = collections.Counter()

    async def one(i: int, method: str, message: object, reply: object) -> None:
        call = chans[i % channels].unary_unary(service + method, request_serializer=lambda m: m.SerializeToString(),
                                               response_deserializer=reply.FromString)  # type: ignore[attr-defined]
        try:
            await call(message, timeout=60)
            codes[method, "OK"] += 1
        except grpc.aio.AioRpcError as exc:
            codes[method, exc.code().name] += 1
            if exc.code() not in (grpc.StatusCode.RESOURCE_EXHAUSTED,):
                codes[method, exc.code().name, exc.details()[:80]] += 0

    started = time.monotonic()
    await asyncio.gather(*(one(i, "ModelInfer", request, pb.ModelInferResponse) for i in range(calls)),
                         *(one(i, "ServerLive", pb.ServerLiveRequest(), pb.ServerLiveResponse) for i in range(calls)))
    for c in chans:
        await c.close()
    return f"{calls} ModelInfer + {calls} ServerLive on {channels} channels in {time.monotonic() - started:.1f} s: " + \
        ", ".join(f"{'/'.join(k)}: {v}" for k, v in sorted(codes.items()))


def soak(port: int, pid: int, model: str, rounds: int, texts: int) -> str:
    import httpx
    import psutil

    body = json.dumps({"inputs": [{"name": "text", "shape": [texts], "datatype": "BYTES",
                                   "data": [f"guten morgen {i}" for i in range(texts)]}]}).encode()
    server = psutil.Process(pid)
    sizes, seconds = [server.memory_info().rss >> 20], []
    with httpx.Client(timeout=300) as client:
        for _ in range(rounds):
            started = time.monotonic()
            client.post(f"http://127.0.0.1:{port}/v2/models/{model}/infer", content=body).raise_for_status()
            seconds.append(time.monotonic() - started)
            time.sleep(0.5)
            sizes.append(server.memory_info().rss >> 20)
    return (f"{rounds} x {texts} strings, {np.median(seconds):.1f} s a request (median): RSS MiB at start "
            f"{sizes[0]}, after round 1 {sizes[1]}, after the last {sizes[-1]} "
            f"({100 * (sizes[-1] / sizes[1] - 1):+.1f} %), max {max(sizes)}; all: {sizes}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("package", type=Path)
    parser.add_argument("-c", "--concurrency", type=int, nargs="+", default=[1, 64, 512, 2048])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--serve-flags", default="", help="extra `dlforge serve` flags")
    parser.add_argument("--polite", action="store_true", help="clients wait Retry-After seconds after a 503")
    parser.add_argument("--grpc", action="store_true", help="a gRPC burst instead of HTTP load")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--server-log", type=Path, help="keep the access log, in this file, and report the "
                        "server's own latencies beside the client's")
    parser.add_argument("--soak", type=int, default=0, help="rounds of a text attack (a text package)")
    parser.add_argument("--texts", type=int, default=65536, help="--soak: strings per request")
    args = parser.parse_args()
    global POLITE
    POLITE = args.polite
    port, grpc_port = free_port(), free_port() if args.grpc else None
    flags = shlex.split(args.serve_flags)
    if args.soak and "--workers" not in flags:
        flags += ["--workers", "1"]  # the resident size of the one serving process, not of a supervisor
    proc = start_server(str(args.package), port, grpc_port, flags, args.server_log)
    try:
        if args.soak:
            print(soak(port, proc.pid, json.loads((args.package / "manifest.json").read_text())["name"], args.soak,
                       args.texts), flush=True)
            return
        if args.grpc:
            assert grpc_port is not None
            print(asyncio.run(grpc_burst(grpc_port, args.calls, args.channels)), flush=True)
        for clients in [] if args.grpc else args.concurrency:
            offset = args.server_log.stat().st_size if args.server_log else 0
            line = asyncio.run(load(port, clients, args.seconds))
            print(line + (server_side(args.server_log, offset) if args.server_log else ""), flush=True)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)


if __name__ == "__main__":
    main()
