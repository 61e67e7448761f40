"""LitServe serving the package's model.onnx for bench_serve.py (`pip install 'dlforge[bench]'`).

A module of its own: LitServe spawns its inference worker, which must import the LitAPI class by name; no
`from __future__ import annotations`: LitServe hands decode_request's annotation to FastAPI as the body type.
"""

from pathlib import Path
from typing import Any

import litserve as ls
import numpy as np

from serve_peers import DELAY_MS, MAX_BATCH, json_input, json_reply, ort_session, threads_per_worker


class OnnxAPI(ls.LitAPI):  # type: ignore[misc]
    """decode → batch (np.concatenate) → one session.run → unbatch → encode, JSON in and out."""

    def __init__(self, package: Path) -> None:
        super().__init__(max_batch_size=MAX_BATCH, batch_timeout=DELAY_MS / 1000)
        self.package = package

    def setup(self, device: str) -> None:
        self.session = ort_session(self.package, threads_per_worker(1))

    def decode_request(self, request: dict[str, Any]) -> np.ndarray:
        return json_input(request)

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(inputs)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(["probabilities"], {"input": x})[0])

    def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
        return [row[None] for row in output]  # the benchmark's requests carry one row each

    def encode_response(self, output: np.ndarray) -> dict[str, Any]:
        return json_reply(self.package.parent.name, output)


def run(package: Path, port: int) -> None:
    """One inference worker on the CPU, LitServe's own batching (max 32, 5 ms)."""
    server = ls.LitServer(OnnxAPI(package), accelerator="cpu", devices=1, workers_per_device=1)
    server.run(host="127.0.0.1", port=port, generate_client_file=False, log_level="warning")
