"""Everything a serving process is configured with, validated once (CLI → Settings → app).

Settings travel to `--workers N` child processes as JSON in one environment variable, because
uvicorn starts them from an import string and cannot pass Python objects.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ENV_VAR = "DLFORGE_SERVE_SETTINGS"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def usable_cores() -> int:
    """Cores this process may run on (taskset / cgroup cpusets), not the machine's total."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class Settings(BaseModel):
    """One server: where the models are, how to batch them, who may call, and the limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path  # a package directory or a repository REPO/<model>/<version>/
    models: tuple[str, ...] = ()  # serve only these models of the repository; empty = every model
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    grpc_port: int | None = Field(None, ge=0, le=65535)  # the V2 gRPC service on this port; None = off, 0 = any
    playground: bool = True  # GET / serves the browser playground
    workers: int = Field(1, ge=1)
    runtime: Literal["onnx", "torch"] = "onnx"
    tokens: tuple[str, ...] = ()  # bearer tokens for inference; empty = open
    admin_token: str | None = None  # enables the repository API; None = the API is off
    max_body_bytes: int = Field(64 << 20, ge=1)
    # Batching: None = the package manifest's `serving` section (then the built-in default).
    max_batch_size: int | None = Field(None, ge=1)
    max_queue_delay_ms: float | None = Field(None, ge=0)
    max_queue_size: int = Field(256, ge=1)
    request_timeout_s: float = Field(30.0, gt=0)  # queue + compute deadline → 504
    intra_op_threads: int | None = Field(None, ge=1)  # None: cores // workers
    # Batches run on the event loop when the model's measured full-batch latency is below this (a hop to an
    # inference thread and back costs more); 0 = always use the inference threads.
    inline_max_ms: float = Field(2.0, ge=0)
    server_name: str = "dlforge"

    def threads(self) -> int:
        """Runtime threads per process, so N workers do not oversubscribe the cores."""
        if self.intra_op_threads:
            return self.intra_op_threads
        return max(1, usable_cores() // self.workers)

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
