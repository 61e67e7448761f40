"""Everything a serving process is configured with, validated once (CLI → Settings → app).

Settings travel to `--workers N` child processes as JSON in one environment variable, because
uvicorn starts them from an import string and cannot pass Python objects.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from dlforge.cores import usable_cores

ENV_VAR = "DLFORGE_SERVE_SETTINGS"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class Settings(BaseModel):
    """One server: where the models are, how to batch them, who may call, and the limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path  # a package directory or a repository REPO/<model>/<version>/
    models: tuple[str, ...] = ()  # serve only these models of the repository; empty = every model
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    grpc_port: int | None = Field(None, ge=0, le=65535)  # the V2 gRPC service on this port; None = off, 0 = any
    playground: bool = True  # GET / serves the browser playground
    workers: int | None = Field(1, ge=1)  # None: chosen from the cores and the model (workers.py)
    runtime: Literal["onnx", "torch"] = "onnx"
    tokens: tuple[str, ...] = ()  # bearer tokens for inference; empty = open
    admin_token: str | None = None  # enables the repository API; None = the API is off
    max_body_bytes: int = Field(64 << 20, ge=1)
    max_json_bytes: int = Field(16 << 20, ge=1)  # the JSON part of a body; bigger tensors go binary (413 above)
    # Batching and admission: None = the package manifest's `serving` section, then a value derived from
    # the model's measured latency (see policy.py, the one place these are resolved).
    max_batch_size: int | None = Field(None, ge=1)
    max_queue_delay_ms: float | None = Field(None, ge=0)
    max_queue: int | None = Field(None, ge=1)  # requests waiting per model version; 503 above
    max_batch_rows: int | None = Field(None, ge=1)  # rows one request may carry; 400 above
    max_inflight: int | None = Field(None, ge=1)  # requests admitted per model version and process; 503 above
    request_timeout_s: float = Field(30.0, gt=0)  # body read + queue + compute deadline → 504
    intra_op_threads: int | None = Field(None, ge=1)  # None: cores // workers
    # Batches run on the event loop when the model's measured full-batch latency is below this (a hop to an
    # inference thread and back costs more); 0 = always use the inference threads.
    inline_max_ms: float = Field(2.0, ge=0)
    allow_nonfinite: bool = False  # NaN/Inf float inputs are refused (400) unless allowed
    access_log: bool = True  # one JSON line per request (~25 µs of CPU each: see docs/serving.md)
    docs: bool = False  # serve the interactive /docs page (the /openapi.json document is always served)
    # Connection limits, enforced by the HTTP server itself (server.py).
    limit_concurrency: int = Field(1024, ge=1)  # connections (or requests) per process; over it 503 + close
    max_header_bytes: int = Field(64 << 10, ge=1024)  # request line + headers; 431 and close above it
    header_timeout_s: float = Field(10.0, gt=0)  # a request's headers must arrive within this; else closed
    keep_alive_s: int = Field(5, ge=1)  # idle keep-alive connections are closed after this
    worker_start_timeout_s: int = Field(120, ge=5)  # --workers: time a (re)started worker has to load models
    server_name: str = "dlforge"

    def threads(self) -> int:
        """Runtime threads per process, so N workers do not oversubscribe the cores."""
        if self.intra_op_threads:
            return self.intra_op_threads
        return max(1, usable_cores() // self.processes)

    @property
    def body_timeout_s(self) -> float:
        """Time a request body may take: the request deadline, but no less than the header timeout (a client is
        not refused for a deadline it cannot see, while a body trickling in byte by byte still ends in 408)."""
        return max(self.request_timeout_s, self.header_timeout_s)

    @property
    def processes(self) -> int:
        """Server processes: `workers`, or 1 while the automatic choice is not made yet."""
        return self.workers or 1

    def exposed_without_token(self) -> bool:
        """Binding beyond loopback with no token lets anyone on the network run the model."""
        return self.host not in LOOPBACK and not self.tokens

    def to_env(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_env(cls) -> Settings:
        raw = os.environ.get(ENV_VAR)
        if raw is None:
            raise RuntimeError(f"{ENV_VAR} is not set; start the server with `dlforge serve PATH`")
        return cls.model_validate_json(raw)
