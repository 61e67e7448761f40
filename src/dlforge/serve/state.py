"""What one serving process shares between its front doors (HTTP routes, gRPC service, playground).

The state and the few calls both protocols make on it live here, below app.py and the route and
service modules, so those import this and never each other.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from dlforge.serve.batcher import DeadlineExceeded
from dlforge.serve.metrics import ServeMetrics
from dlforge.serve.repository import ModelInstance, Repository
from dlforge.serve.settings import Settings


@dataclass
class ServeState:
    """Everything the routes need: settings, the repository, metrics and the inference threads."""

    settings: Settings
    repository: Repository = field(init=False)
    metrics: ServeMetrics = field(init=False)
    executor: ThreadPoolExecutor = field(init=False)
    accepting: bool = False  # between startup and shutdown: what /v2/health/ready reports
    grpc_port: int | None = None  # the port the gRPC service is bound to, once started

    def ready(self) -> bool:
        """Server readiness: started, not shutting down, something loaded and nothing failed."""
        return self.accepting and self.repository.ready()

    def extensions(self) -> list[str]:
        """The V2 extensions this server advertises in its server metadata."""
        names = ["binary_tensor_data", "classification"]
        if self.settings.admin_token is not None:
            names.append("model_repository")
        return names


async def submit(state: ServeState, instance: ModelInstance, inputs: dict[str, np.ndarray], started: float,
                 timeout: float | None = None) -> dict[str, np.ndarray]:
    """Queue on the instance's batcher; past the deadline (the server's, or `timeout` if sooner) → DeadlineExceeded."""
    limit = state.settings.request_timeout_s if timeout is None else min(timeout, state.settings.request_timeout_s)
    try:
        async with asyncio.timeout(limit):
            return await instance.batcher.submit(inputs, deadline=started + limit)
    except TimeoutError:
        raise DeadlineExceeded(f"the request did not finish within {limit:g} s") from None
