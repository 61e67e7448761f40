"""The servers bench_serve.py compares `dlforge serve` with, each started and stopped by the benchmark.

Every model server runs the same model.onnx in ONNX Runtime with the session options `dlforge serve` uses
(intra-op threads = cores // workers, no spinning), so only the serving layer differs:

- floor: a bare Starlette app on uvicorn (1 worker) answering a constant: the HTTP cost alone.
- naive: FastAPI, one request = one session.run, no batching (dlforge's wire code parses the body).
- litserve: a LitAPI (litserve_app.py), batching max 32 / 5 ms (`pip install 'dlforge[bench]'`).
- torchserve: a custom handler, batch 32 / 5 ms, 2 workers (`pip install torchserve torch-model-archiver` and a
  Java 17 runtime; skipped with the reason printed otherwise).

The peers (litserve, torchserve) take V2 JSON bodies only; with `--body binary` they are skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, Response  # module level: FastAPI resolves the annotations here

HERE = Path(__file__).resolve()
MAX_BATCH, DELAY_MS = 32, 5.0


def ort_session(package: str | Path, threads: int) -> Any:
    """The ONNX Runtime session exactly as `dlforge serve` configures it (threads, no spinning)."""
    from dlforge.export.package import load_package
    from dlforge.serve.runtime import OnnxRuntime

    return OnnxRuntime(load_package(Path(package)), threads).session


def threads_per_worker(workers: int) -> int:
    return max(1, len(os.sched_getaffinity(0)) // workers)


def json_reply(model: str, probs: np.ndarray) -> dict[str, Any]:
    """A V2 JSON response with the probabilities only (what the benchmark's request asks for)."""
    return {"model_name": model, "outputs": [{"name": "probabilities", "datatype": "FP32",
                                              "shape": list(probs.shape), "data": probs.ravel().tolist()}]}


def json_input(body: dict[str, Any]) -> np.ndarray:
    inp = body["inputs"][0]
    return np.asarray(inp["data"], dtype=np.float32).reshape(inp["shape"])


# --- the apps (each in its own process: `bench_serve.py --app KIND PACKAGE --port N`) ----------------------


def floor_app() -> Any:
    """Starlette answering a constant: routing and HTTP only, no parsing, no model."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    answer = json.dumps(json_reply("floor", np.zeros((1, 10), np.float32))).encode()

    async def infer(request: Request) -> Response:
        await request.body()
        return Response(answer, media_type="application/json")

    return Starlette(routes=[Route("/v2/models/{model}/infer", infer, methods=["POST"])])


def naive_app(package: Path) -> Any:
    """One request, one session.run: no batching, no queue (the baseline)."""
    from dlforge.serve.protocol import encode_response, parse_header_length, parse_request_body

    session = ort_session(package, threads_per_worker(1))
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


TORCHSERVE_HANDLER = '''
"""TorchServe handler: the package's model.onnx in ONNX Runtime, set up like `dlforge serve`."""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.environ["BENCH_DIR"])
from serve_peers import json_input, json_reply, ort_session, threads_per_worker  # noqa: E402

_state = {}


def handle(data, context):
    if "session" not in _state:
        threads = threads_per_worker(int(os.environ["BENCH_TS_WORKERS"]))
        _state["session"] = ort_session(os.environ["BENCH_PACKAGE"], threads)
    if data is None:
        return None
    arrays = []
    for row in data:
        body = row.get("body") if row.get("body") is not None else row.get("data")
        arrays.append(json_input(json.loads(body) if isinstance(body, (bytes, bytearray)) else body))
    probs = _state["session"].run(["probabilities"], {"input": np.concatenate(arrays)})[0]
    out, start = [], 0
    for a in arrays:
        out.append(json_reply(context.model_name, probs[start:start + len(a)]))
        start += len(a)
    return out
'''


# --- lifecycle -------------------------------------------------------------------------------------------


@dataclass
class Server:
    """One server under test: how to start it, the URL wrk posts to, and how to stop it (every process)."""

    name: str
    url: str
    cores: int  # processes doing the work, for the floor-per-core ratio (capped by the cores it may use)
    start_cmd: list[str]
    env: dict[str, str] = field(default_factory=dict)
    stop_cmd: list[str] | None = None  # a daemon (TorchServe): stop with this, then reap what is left
    proc: subprocess.Popen[bytes] | None = None
    pids: set[int] = field(default_factory=set)
    log: Path | None = None  # its stdout and stderr, quoted when it fails


def peer_skip_reason(kind: str, body: str) -> str | None:
    """Why a peer cannot run here (printed, the row is skipped), or None."""
    if kind in ("litserve", "torchserve") and body != "json":
        return f"{kind}: the benchmark's handler takes V2 JSON bodies only (run with --body json)"
    if kind == "litserve" and find_spec("litserve") is None:
        return "litserve: not installed (pip install 'dlforge[bench]')"
    if kind == "torchserve":
        if shutil.which(tool("torchserve")) is None or shutil.which(tool("torch-model-archiver")) is None:
            return "torchserve: not installed (pip install torchserve torch-model-archiver)"
        if shutil.which("java") is None:
            return "torchserve: no Java runtime (apt-get install -y openjdk-17-jre-headless)"
    return None


def tool(name: str) -> str:
    """A console script of this interpreter's environment (the venv need not be activated)."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


def torchserve(model: str, package: Path, ports: tuple[int, int, int], workers: int, tmp: Path) -> Server:
    """Archive the handler (no weights: it loads the package's model.onnx) and write the config."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "handler.py").write_text(TORCHSERVE_HANDLER)
    store = tmp / "store"
    store.mkdir(exist_ok=True)
    subprocess.run([tool("torch-model-archiver"), "--model-name", model, "--version", "1.0", "--handler",
                    str(tmp / "handler.py"), "--export-path", str(store), "--force"], check=True)
    models = {model: {"1.0": {"defaultVersion": True, "marName": f"{model}.mar", "minWorkers": workers,
                              "maxWorkers": workers, "batchSize": MAX_BATCH, "maxBatchDelay": int(DELAY_MS),
                              "responseTimeout": 120}}}
    infer, mgmt, metrics = ports
    (tmp / "config.properties").write_text("\n".join([
        f"inference_address=http://127.0.0.1:{infer}", f"management_address=http://127.0.0.1:{mgmt}",
        f"metrics_address=http://127.0.0.1:{metrics}", f"model_store={store}", f"load_models={model}.mar",
        f"models={json.dumps(models)}", "disable_token_authorization=true", "install_py_dep_per_model=false",
        "disable_system_metrics=true", "default_response_timeout=120", ""]))
    env = {"BENCH_DIR": str(HERE.parent), "BENCH_PACKAGE": str(package), "BENCH_TS_WORKERS": str(workers),
           "TMPDIR": str(tmp), "LOG_LOCATION": str(tmp / "logs"), "METRICS_LOCATION": str(tmp / "logs")}
    ts = tool("torchserve")
    return Server("torchserve", f"http://127.0.0.1:{infer}/predictions/{model}", workers,
                  [ts, "--start", "--ncs", "--foreground", "--model-store", str(store), "--ts-config",
                   str(tmp / "config.properties"), "--disable-token-auth"], env=env, stop_cmd=[ts, "--stop"])


def start(server: Server, probe: Callable[[], Any], log: Path, timeout: float = 180) -> None:
    """Start it and wait until `probe()` (a real inference request) answers."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parents[1] / "src"), str(HERE.parent)]),
           **server.env}
    server.log = log
    with log.open("wb") as out:
        server.proc = subprocess.Popen(server.start_cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}{log_tail(server)}")
        if probe():
            server.pids = descendants(server.proc.pid)
            return
        time.sleep(0.3)
    raise RuntimeError(f"{server.name} did not answer within {timeout:.0f} s{log_tail(server)}")


def log_tail(server: Server, lines: int = 15) -> str:
    if server.log is None or not server.log.exists():
        return ""
    return "; its log ends:\n" + "\n".join(server.log.read_text(errors="replace").splitlines()[-lines:])


def descendants(pid: int) -> set[int]:
    import psutil

    try:
        return {pid, *(p.pid for p in psutil.Process(pid).children(recursive=True))}
    except psutil.NoSuchProcess:
        return {pid}


def cpu_seconds(server: Server) -> float:
    """User + system CPU seconds used so far by the server's processes (every thread): what a request costs,
    independent of what else the machine runs, unlike req/s."""
    import psutil

    total = 0.0
    for pid in server.pids | (descendants(server.proc.pid) if server.proc else set()):
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def stop(server: Server) -> None:
    """Stop it and every process it started (TorchServe: `torchserve --stop`, then its Java and workers)."""
    import psutil

    if server.proc is None:
        return
    pids = server.pids | descendants(server.proc.pid)
    if server.stop_cmd:
        subprocess.run(server.stop_cmd, env={**os.environ, **server.env}, capture_output=True, timeout=60)
    elif server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
    procs = [p for p in map(_process, pids) if p is not None]
    _, alive = psutil.wait_procs(procs, timeout=30)
    for p in alive:
        p.kill()
    psutil.wait_procs(alive, timeout=10)
    server.proc.wait(10)
    server.proc = None


def _process(pid: int) -> Any:
    import psutil

    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None
