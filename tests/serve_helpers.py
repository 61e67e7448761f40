"""Helpers for serve tests: a real uvicorn server on a free 127.0.0.1 port, and V2 request bodies."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI

from dlforge.serve.app import create_app
from dlforge.serve.protocol import HEADER_LENGTH
from dlforge.serve.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running(settings: Settings) -> Iterator[tuple[str, FastAPI]]:
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
