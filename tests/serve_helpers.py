"""Helpers for serve tests: a real uvicorn server on a free 127.0.0.1 port, and V2 request bodies."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import uvicorn

from dlforge.serve.app import create_app
from dlforge.serve.fastpath import InferFastPath
from dlforge.serve.protocol import HEADER_LENGTH
from dlforge.serve.settings import Settings

# The playground's browser tests: Debian's chromium driven by Playwright (never a browser Playwright downloads).
CHROMIUM = next((p for p in (shutil.which("chromium"), "/usr/bin/chromium") if p and Path(p).is_file()), None)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NO_CHROMIUM = "no chromium on this machine (CI installs it: apt-get install chromium)"


@contextlib.contextmanager
def browser_page() -> Iterator[Any]:
    """A page in headless Debian chromium (Playwright never downloads a browser here), closed afterwards.
    Waits are 30 s: a loaded 2-core CI machine is slow, not hung."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(30_000)
            expect.set_options(timeout=30_000)
            yield page
        finally:
            browser.close()


def artifacts_dir() -> Path:
    """Where browser tests leave screenshots: $DLFORGE_TEST_ARTIFACTS, else test-artifacts/ in the checkout."""
    path = Path(os.environ.get("DLFORGE_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running(settings: Settings) -> Iterator[tuple[str, InferFastPath]]:
    """Serve `settings` from a thread; yields (base URL, app); always stops the server."""
    port = free_port()
    app = create_app(settings.model_copy(update={"port": port}))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(30)


def make_repository(package: Path, root: Path, versions: dict[str, list[str]]) -> Path:
    """REPO/<model>/<version>/ copies of one package (e.g. {"digits": ["1", "2"]})."""
    for model, names in versions.items():
        for version in names:
            shutil.copytree(package, root / model / version)
    return root


def infer_body(x: np.ndarray, nested: bool = False, **extra: Any) -> dict[str, Any]:
    data = x.tolist() if nested else x.reshape(-1).tolist()
    return {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": data}], **extra}


def binary_body(x: np.ndarray, outputs: list[dict[str, Any]] | None = None) -> tuple[bytes, dict[str, str]]:
    """A binary-extension request: JSON header, then the raw FP32 bytes."""
    blob = x.astype("<f4").tobytes()
    header: dict[str, Any] = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                          "parameters": {"binary_data_size": len(blob)}}]}
    if outputs is not None:
        header["outputs"] = outputs
    raw = json.dumps(header).encode()
    return raw + blob, {HEADER_LENGTH: str(len(raw)), "Content-Type": "application/octet-stream"}


SRC = str(Path(__file__).resolve().parents[1] / "src")


@contextlib.contextmanager
def serve_process(path: Path, *flags: str, log: Path, env: dict[str, str] | None = None,
                  ready_s: float = 120) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`python -m dlforge serve PATH FLAGS` as a real process on a free port; yields (URL, process).

    One worker process unless FLAGS say otherwise, so a test behaves the same on any number of cores (the
    automatic choice has its own test). Always stops it (SIGTERM, then SIGKILL of its process group) so no
    server outlives the test."""
    port = free_port()
    workers = [] if "--workers" in flags else ["--workers", "1"]
    cmd = [sys.executable, "-m", "dlforge", "serve", str(path), "--port", str(port), *workers, *flags]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": SRC, **(env or {})}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_s
        while not _ready(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not become ready (rc {proc.poll()}): {log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
        with contextlib.suppress(ProcessLookupError, PermissionError):  # anything it left behind
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _ready(url: str) -> bool:
    try:
        # uvicorn listens only once the lifespan start-up (model loading) is over: live means loaded
        return httpx.get(f"{url}/v2/health/live", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
