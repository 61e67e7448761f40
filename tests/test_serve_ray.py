"""`dlforge serve --backend ray` on a real local Ray cluster (`ray start --head` on free ports), 2 replicas.

Answers through Ray's HTTP proxy equal the plain server's; a replica SIGKILLed under load is replaced and only
requests in flight on it may fail; the cluster's processes (found by their session id) are all gone at the end.
Bad setups get one `error:` line.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from dlforge.cli import app
from dlforge.serve.settings import Settings
from tests.ray_helpers import ray_head, session_pids
from tests.serve_helpers import binary_body, free_port, infer_body, running

pytestmark = pytest.mark.serve
SRC = str(Path(__file__).resolve().parents[1] / "src")
REPLICA = "ray::ServeReplica:dlforge-tiny:"
CLIENTS = 4
DEPLOY_S, REPLACE_S = 300, 240  # generous: a loaded 2-core machine starts Ray slowly


# --- errors without a cluster -------------------------------------------------------------------


@pytest.mark.parametrize(("args", "message"), [
    (["--ray-address", "127.0.0.1:{port}"], "cannot reach the Ray cluster at 127.0.0.1:"),
    (["--ray-address", "nonsense"], "--ray-address must be HOST:PORT"),
    (["--min-replicas", "3", "--max-replicas", "2"], "min_replicas (3) must not exceed max_replicas (2)"),
    (["--min-replicas", "1"], "autoscaling.max_replicas: Field required"),
    (["--replicas", "2", "--max-replicas", "4"], "either --replicas (fixed) or --min/--max-replicas"),
    (["--replicas", "0"], "replicas: Input should be greater than or equal to 1"),
])
def test_bad_ray_setups_are_one_error_line(model_package: Path, args: list[str], message: str) -> None:
    args = [a.replace("{port}", str(free_port())) for a in args]
    result = CliRunner().invoke(app, ["serve", str(model_package), "--backend", "ray", *args])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error:") and message in result.output, result.output
    assert "Traceback" not in result.output


def test_ray_options_need_the_ray_backend(model_package: Path) -> None:
    result = CliRunner().invoke(app, ["serve", str(model_package), "--replicas", "2"])
    assert result.exit_code == 2 and "need --backend ray" in result.output


def test_missing_ray_extra_is_one_error_line(model_package: Path, tmp_path: Path) -> None:
    # A `ray` package that fails to import, first on the path: what a machine without the extra sees.
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{SRC}"}
    proc = subprocess.run([sys.executable, "-m", "dlforge", "serve", str(model_package), "--backend", "ray"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == "error: --backend ray needs Ray Serve: pip install 'dlforge[ray]'"


# --- a real cluster -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[tuple[str, int]]:
    with ray_head() as cluster:
        yield cluster


@contextlib.contextmanager
def _ray_server(package: Path, address: str, port: int, log: Path) -> Iterator[str]:
    cmd = [sys.executable, "-m", "dlforge", "serve", str(package), "--backend", "ray", "--ray-address", address,
           "--port", str(port), "--replicas", "2", "--replica-cpus", "1"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": SRC}, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(lambda: _ready(url, proc, log), DEPLOY_S, "the Ray deployment did not become ready")
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)  # deletes the applications, then exits
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> bool:
    if proc.poll() is not None:
        raise RuntimeError(f"dlforge serve --backend ray exited: {log.read_text()[-3000:]}")
    try:
        return httpx.get(f"{url}/v2/health/ready", timeout=10).status_code == 200
    except httpx.TransportError:
        return False


def _wait(condition: Any, seconds: float, message: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.5)


def _answers(url: str) -> list[tuple[int, Any]]:
    """Status and body of every kind of request, for comparing two servers."""
    x = np.linspace(0, 1, 3 * 64, dtype=np.float32).reshape(3, 1, 8, 8)
    blob, headers = binary_body(x, outputs=[{"name": "logits", "parameters": {"binary_data": True}}])
    with httpx.Client(base_url=url, timeout=60) as c:
        responses = [c.get("/v2/health/live"), c.get("/v2/health/ready"), c.get("/v2"),
                     c.get("/v2/models/tiny"), c.get("/v2/models/tiny/ready"), c.get("/v2/models/tiny/versions/1"),
                     c.post("/v2/models/tiny/infer", json=infer_body(x, id="r1")),
                     c.post("/v2/models/tiny/versions/1/infer", json=infer_body(x[:1], nested=True)),
                     c.post("/v2/models/tiny/infer", content=blob, headers=headers),
                     c.post("/v2/models/tiny/infer", json=infer_body(x.reshape(3, 8, 8))),  # wrong rank: 400
                     c.get("/v2/models/tiny/versions/7"), c.get("/v2/models/tinny"),
                     c.post("/v2/models/tinny/infer", json=infer_body(x))]
    return [(r.status_code, r.json() if "json" in r.headers.get("content-type", "") else r.content)
            for r in responses]


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="finds the cluster's processes in /proc")
def test_ray_serve_answers_like_the_plain_server_and_survives_a_replica_kill(
        model_package: Path, ray_cluster: tuple[str, int], tmp_path: Path) -> None:
    address, sid = ray_cluster
    # One inference thread, as in each Ray replica (--replica-cpus 1): same kernels, bit-identical outputs.
    with running(Settings(path=model_package, intra_op_threads=1)) as (plain_url, _):
        expected = _answers(plain_url)
    assert [status for status, _ in expected] == [200] * 9 + [400, 404, 404, 404]
    with _ray_server(model_package, address, free_port(), tmp_path / "serve.log") as url:
        assert _answers(url) == expected
        _the_playground_is_served(url)
        replicas = _replicas(sid)
        assert len(replicas) == 2, replicas
        _kill_one_under_load(url, address, sid, replicas, expected[6][1])
    _wait(lambda: not _replicas(sid), 120, "the replicas were not removed when dlforge serve stopped")


def _the_playground_is_served(url: str) -> None:
    """The page and its assets come from the front application, the list from every model's replicas, the card
    from the model's own application: what the page needs works under Ray as on the plain server (#29)."""
    for path in ("/", "/playground/tiny"):
        page = httpx.get(url + path, timeout=30)
        assert page.status_code == 200 and '<script src="/playground/assets/app.js"' in page.text, page.text[:200]
        assert "script-src 'self'" in page.headers["content-security-policy"]
    assert httpx.get(f"{url}/playground/assets/app.js", timeout=30).status_code == 200
    listed = httpx.get(f"{url}/v2/models", timeout=30).json()
    assert listed == {"models": [{"name": "tiny", "versions": ["1"], "ready": True}]}, listed
    card = httpx.get(f"{url}/v2/models/tiny/card", timeout=30).json()
    assert (card["name"], card["task"]) == ("tiny", "classification"), card


def _replicas(sid: int) -> set[int]:
    return {pid for pid, cmd in session_pids(sid).items() if cmd.startswith(REPLICA)}


# Asks Ray's controller (as a short-lived driver) until the deployment has `n` RUNNING replicas.
_STATUS_SCRIPT = """
import sys, time, ray
from ray import serve
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
deadline = time.monotonic() + float(sys.argv[3])
while time.monotonic() < deadline:
    app = serve.status().applications.get("dlforge-tiny")
    states = app.deployments["model"].replica_states if app else {}
    if states.get("RUNNING", 0) == int(sys.argv[2]) and sum(states.values()) == int(sys.argv[2]):
        sys.exit(0)
    time.sleep(1)
sys.exit(f"replica states: {states}")
"""


def _wait_running_replicas(address: str, n: int) -> None:
    proc = subprocess.run([sys.executable, "-c", _STATUS_SCRIPT, address, str(n), str(REPLACE_S)],
                          env={**os.environ, "PYTHONPATH": SRC}, capture_output=True, text=True,
                          timeout=REPLACE_S + 60)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _kill_one_under_load(url: str, address: str, sid: int, replicas: set[int], answer: dict[str, Any]) -> None:
    """CLIENTS threads send requests in a loop; one replica gets SIGKILL; the load runs on until it is replaced."""
    x = np.linspace(0, 1, 3 * 64, dtype=np.float32).reshape(3, 1, 8, 8)
    body, outcomes, stop = infer_body(x, id="r1"), collections.Counter[str](), threading.Event()
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(timeout=120) as c:
            while not stop.is_set():
                try:
                    r = c.post(f"{url}/v2/models/tiny/infer", json=body)
                    outcome = "ok" if r.status_code == 200 and r.json() == answer else f"{r.status_code} {r.text[:80]}"
                except httpx.TransportError as exc:
                    outcome = type(exc).__name__
                with lock:
                    outcomes[outcome] += 1
                time.sleep(0.01)  # leave the cores some room to start the replacement

    threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    try:
        _wait(lambda: outcomes["ok"] >= 20, 120, f"no steady load: {outcomes}")
        victim = min(replicas)
        os.kill(victim, signal.SIGKILL)
        _wait(lambda: len(_replicas(sid) - replicas) == 1 and len(_replicas(sid)) == 2, REPLACE_S,
              f"replica {victim} was not replaced: {_replicas(sid)}")
        _wait_running_replicas(address, 2)
        replaced_at = outcomes["ok"]
        _wait(lambda: outcomes["ok"] >= replaced_at + 40, 120, f"no answers after the replacement: {outcomes}")
    finally:
        stop.set()
        for t in threads:
            t.join(150)
    failed = sum(n for outcome, n in outcomes.items() if outcome != "ok")
    # Only requests in flight on the killed replica may fail: at most one per client thread.
    assert failed <= CLIENTS, outcomes
    assert outcomes["ok"] >= 60
