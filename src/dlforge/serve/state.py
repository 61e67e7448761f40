"""What one serving process shares between its front doors (HTTP routes, gRPC service, playground).

The state, the one error → HTTP status mapping and the few calls both protocols make live here,
below app.py and the route and service modules, so those import this and never each other.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from dlforge.export.inputs import InputError
from dlforge.memory import release_free_memory
from dlforge.serve.batcher import BatcherStopped, DeadlineExceeded, QueueFull
from dlforge.serve.metrics import ServeMetrics
from dlforge.serve.protocol import JsonTooLarge, ProtocolError
from dlforge.serve.repository import ModelInstance, ModelLoadFailed, ModelNotFound, ModelNotReady, Repository
from dlforge.serve.security import AuthError, BodyTooLarge, RequestTimeout
from dlforge.serve.settings import Settings

log = logging.getLogger("dlforge.serve")
TRIM_AFTER_BYTES = 256 << 10  # a request this big leaves enough freed heap behind to be worth a trim
TRIM_DELAY_S = 0.2  # trim this long after it: its answer is sent by then, and a burst of them trims once
CLIENT_CLOSED = 499  # nginx's code for "the client went away before the answer": counted, never sent


@dataclass
class ServeState:
    """Everything the routes need: settings, the repository, metrics and the inference threads."""

    settings: Settings
    repository: Repository = field(init=False)
    metrics: ServeMetrics = field(init=False)
    executor: ThreadPoolExecutor = field(init=False)
    accepting: bool = False  # between startup and shutdown: what /v2/health/ready reports
    grpc_port: int | None = None  # the port the gRPC service is bound to, once started
    trim_pending: bool = False  # a heap trim is scheduled or running

    def release_memory_soon(self, request_bytes: int) -> None:
        """After a request of `request_bytes`: hand the heap it freed back to the OS, shortly, on a thread.

        Its decoded strings and arrays are freed when it ends, but glibc keeps them cached in its arenas
        (65,536 texts left a server at ~900 MB): trimming brings the resident size back near its level."""
        if request_bytes < TRIM_AFTER_BYTES or self.trim_pending:
            return
        self.trim_pending = True
        asyncio.get_running_loop().call_later(TRIM_DELAY_S, lambda: asyncio.ensure_future(self._trim()))

    async def _trim(self) -> None:
        try:
            await asyncio.to_thread(release_free_memory, False)  # no gc pass: it would hold the GIL
        finally:
            self.trim_pending = False

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
    """Queue on the instance's batcher; past the deadline → DeadlineExceeded (HTTP 504).

    The deadline is the server's `--timeout-s` from `started`, or sooner when the client gave less
    (`timeout`: the seconds a gRPC call has left)."""
    deadline = started + state.settings.request_timeout_s
    if timeout is not None:
        deadline = min(deadline, time.monotonic() + timeout)
    try:
        async with asyncio.timeout(max(deadline - time.monotonic(), 0.0)):
            return await instance.batcher.submit(inputs, deadline=deadline)
    except TimeoutError:
        raise DeadlineExceeded(f"the request did not finish within {deadline - started:.3g} s") from None


# --- errors -----------------------------------------------------------------------------------

_STATUS: list[tuple[type[BaseException], int]] = [
    (JsonTooLarge, 413), (ProtocolError, 400), (InputError, 400), (RequestValidationError, 400), (ModelLoadFailed, 400),
    (ModelNotFound, 404), (RequestTimeout, 408), (BodyTooLarge, 413), (ClientDisconnect, CLIENT_CLOSED),
    (ModelNotReady, 503), (QueueFull, 503), (BatcherStopped, 503), (DeadlineExceeded, 504),
]


def status_of(exc: BaseException) -> int:
    """The one mapping from error kind to HTTP status; anything unexpected is a 500."""
    if isinstance(exc, AuthError):
        return exc.status
    if isinstance(exc, HTTPException):
        return exc.status_code
    return next((code for kind, code in _STATUS if isinstance(exc, kind)), 500)


def error_response(exc: BaseException) -> JSONResponse:
    """`{"error": ...}` with the status of `exc`; a 500 tells the client only a reference to the log line."""
    status = status_of(exc)
    headers: dict[str, str] = {}
    if status == 500:
        ref = uuid.uuid4().hex[:12]
        log.error("unexpected error (ref %s): %r", ref, exc, exc_info=exc)
        message = f"internal error (ref {ref} in the server log); the server is still running"
    elif status == CLIENT_CLOSED:
        log.info("client disconnected before the request body was read")
        message = "client disconnected"
    else:
        message = _message(exc)
    if status == 503:
        headers["Retry-After"] = "1"
    elif status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    elif status in (408, 413):
        headers["Connection"] = "close"  # the rest of the body was not read
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _message(exc: BaseException) -> str:
    if isinstance(exc, RequestValidationError):
        return "invalid request: " + "; ".join(str(e.get("msg")) for e in exc.errors()[:5])
    if isinstance(exc, HTTPException):
        return str(exc.detail)
    return str(exc)
