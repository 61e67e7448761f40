"""`dlforge serve` as a real process: graceful SIGTERM drain; the torch runtime; the CLI warning."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from dlforge.serve.settings import Settings
from tests.serve_helpers import free_port, infer_body, running

pytestmark = pytest.mark.serve
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _wait_ready(url: str, proc: subprocess.Popen[bytes], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early: {proc.stdout.read().decode() if proc.stdout else ''}")
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
    cmd = [sys.executable, "-m", "dlforge", "serve", str(model_package), "--port", str(port),
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
