"""`dlforge serve` as a real process: graceful SIGTERM drain; N workers; the torch runtime; the CLI warning."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from dlforge.serve.settings import Settings
from tests.serve_helpers import free_port, infer_body, running

pytestmark = pytest.mark.serve
SRC = str(Path(__file__).resolve().parents[1] / "src")
INFER = "/v2/models/tiny/infer"


def _wait_ready(url: str, proc: subprocess.Popen[bytes], seconds: float = 60, log: Path | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = log.read_text() if log else proc.stdout.read().decode() if proc.stdout else ""
            raise RuntimeError(f"server exited early: {output}")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server did not become ready")


def test_sigterm_finishes_the_request_in_flight_and_exits_0(model_package: Path) -> None:
    port = free_port()
    # A long queue delay and a big batch hold the request in the batcher for ~1.5 s: it is in flight.
    cmd = [sys.executable, "-m", "dlforge", "serve", str(model_package), "--port", str(port), "--workers", "1",
           "--max-batch-size", "64", "--max-queue-delay-ms", "1500"]
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, proc)
        result: dict[str, httpx.Response] = {}
        body = infer_body(np.zeros((1, 1, 8, 8), np.float32))
        sender = threading.Thread(target=lambda: result.update(r=httpx.post(f"{url}/v2/models/tiny/infer",
                                                                            json=body, timeout=30)))
        sender.start()
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        sender.join(30)
        assert result["r"].status_code == 200
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = proc.stdout.read().decode() if proc.stdout else ""
    assert '"path": "/v2/models/tiny/infer", "status": 200' in log  # the JSON access log line


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="finds the worker processes in /proc")
def test_two_workers_answer_correctly_merge_metrics_and_exit_cleanly(model_package: Path, tmp_path: Path) -> None:
    from dlforge.export.package import load_package
    from dlforge.serve.runtime import load_runtime

    engine = load_runtime("onnx", load_package(model_package), 1)  # the reference answers
    port, log, tmp = free_port(), tmp_path / "server.log", tmp_path / "tmp"
    tmp.mkdir()  # the server's TMPDIR, where its metrics directory must come and go
    cmd = [sys.executable, "-m", "dlforge", "serve", str(model_package), "--workers", "2", "--port", str(port)]
    with log.open("wb") as out:  # a file, not a pipe: the test reads the access log while the server runs
        # A session of its own, so the cleanup below can reach the workers too if the test fails.
        proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": SRC, "TMPDIR": str(tmp)}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, proc, log=log)
        children = _children(proc.pid)  # the two workers (and multiprocessing's resource tracker)
        rng, sent, rows = np.random.default_rng(0), 0, 0
        while len(_pids(log, INFER)) < 2 and sent < 640:  # which worker accepts a connection is up to the kernel
            inputs = [rng.random((1 + i % 3, 1, 8, 8), dtype=np.float32) for i in range(16)]
            for x, reply in zip(inputs, asyncio.run(_burst(url, inputs)), strict=True):
                _check_answer(reply, engine.infer({"input": x}))
            sent, rows = sent + len(inputs), rows + sum(len(x) for x in inputs)
        assert len(_pids(log, INFER)) == 2, f"one worker answered all {sent} requests"
        # Each worker counted only what it served; a scrape must report both, whichever worker answers it.
        tiny = {"model": "tiny", "version": "1"}
        expected = {
            _series("dlforge_requests_total", **tiny, status="200"): sent,
            _series("dlforge_queue_seconds_count", **tiny): sent,  # one observation per request
            _series("dlforge_batch_size_sum", **tiny): rows,  # every row went through exactly one batch
            _series("dlforge_queue_depth", **tiny): 0,  # summed over the workers
            _series("dlforge_models_loaded"): 1,  # loaded in every worker
        }
        for _ in range(40):
            scrape = _scrape(url)
            assert {key: scrape.get(key) for key in expected} == expected
            assert 2 <= scrape[_series("dlforge_batch_size_count", **tiny)] <= sent  # at least one batch each
            if len(_pids(log, "/metrics")) == 2:
                break
        assert len(_pids(log, "/metrics")) == 2, "one worker answered every scrape"
        assert len(list(tmp.glob("dlforge-metrics-*"))) == 1
        children |= _children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        _wait_gone(children)
    finally:
        with contextlib.suppress(ProcessLookupError):  # never leave a server behind, whatever failed above
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    served = _pids(log, INFER)
    assert len(served) == 2 and set(served) <= children, f"workers {sorted(children)} served {dict(served)}"
    assert sum(served.values()) == sent
    assert not list(tmp.glob("dlforge-metrics-*")), "the metrics directory outlived the server"


async def _burst(url: str, inputs: list[np.ndarray]) -> list[httpx.Response]:
    # No keep-alive: every request opens a connection of its own, which either worker may accept.
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        return await asyncio.gather(*(client.post(INFER, json=infer_body(x)) for x in inputs))


def _check_answer(reply: httpx.Response, expected: dict[str, np.ndarray]) -> None:
    assert reply.status_code == 200, reply.text
    outputs = {o["name"]: o for o in reply.json()["outputs"]}
    assert outputs.keys() == expected.keys()
    for name, want in expected.items():
        assert outputs[name]["shape"] == list(want.shape)
        np.testing.assert_allclose(np.array(outputs[name]["data"]).reshape(want.shape), want, atol=1e-5)


def _pids(log: Path, path: str) -> Counter[int]:
    """Requests to `path` answered 200, per worker pid, from the server's JSON access log lines."""
    lines = [line for line in log.read_text().splitlines() if line.startswith("{") and line.endswith("}")]
    records = [json.loads(line) for line in lines]  # only whole lines: the server may be writing one
    return Counter(r["pid"] for r in records if r["path"] == path and r["status"] == 200)


Series = tuple[str, frozenset[tuple[str, str]]]


def _series(name: str, **labels: str) -> Series:
    return name, frozenset(labels.items())


def _scrape(url: str) -> dict[Series, float]:
    """One /metrics scrape, on a connection of its own."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {_series(s.name, **s.labels): s.value for family in text_string_to_metric_families(text)
            for s in family.samples}


def _children(pid: int) -> set[int]:
    """Running processes whose parent is `pid`."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError):  # it may exit while we look
            state, ppid = _stat(stat)
            if ppid == pid and state != "Z":
                found.add(int(stat.parent.name))
    return found


def _wait_gone(pids: set[int], seconds: float = 10) -> None:
    """Every pid exits (a zombie counts as gone: it runs nothing and holds no port)."""
    deadline = time.monotonic() + seconds
    while (left := {p for p in pids if _running(p)}) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"processes left behind: {sorted(left)}"


def _running(pid: int) -> bool:
    try:
        return _stat(Path(f"/proc/{pid}/stat"))[0] != "Z"
    except (OSError, ValueError):
        return False


def _stat(path: Path) -> tuple[str, int]:
    """(state, parent pid) from /proc/<pid>/stat; the name before them may hold spaces and parentheses."""
    state, ppid = path.read_text().rsplit(")", 1)[1].split()[:2]
    return state, int(ppid)


def test_torch_runtime_agrees_with_onnx(model_package: Path) -> None:
    body = infer_body(np.random.default_rng(1).random((3, 1, 8, 8), dtype=np.float32))
    answers = []
    for runtime in ("onnx", "torch"):
        with running(Settings(path=model_package, runtime=runtime)) as (url, _):
            reply = httpx.post(f"{url}/v2/models/tiny/infer", json=body).json()
            answers.append(np.array(reply["outputs"][1]["data"]))
    np.testing.assert_allclose(answers[0], answers[1], atol=1e-5)


def test_cli_warns_when_exposed_without_a_token(model_package: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dlforge import cli

    started: list[Settings] = []
    monkeypatch.setattr("dlforge.serve.server.run_server", started.append)
    result = CliRunner().invoke(cli.app, ["serve", str(model_package), "--host", "0.0.0.0", "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "without --token" in result.output
    assert started[0].workers == 2 and started[0].host == "0.0.0.0"
    missing = CliRunner().invoke(cli.app, ["serve", "/no/such/dir"])
    assert missing.exit_code == 2
