"""What the app factory and the routes share: the per-app state and the one error → status mapping.

A module below both app.py (factory, lifespan) and routes.py (handlers), so neither imports the other.
"""

from __future__ import annotations

import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from dlforge.export.inputs import InputError
from dlforge.serve.batcher import BatcherStopped, DeadlineExceeded, QueueFull
from dlforge.serve.metrics import ServeMetrics
from dlforge.serve.protocol import JsonTooLarge, ProtocolError
from dlforge.serve.repository import ModelLoadFailed, ModelNotFound, ModelNotReady, Repository
from dlforge.serve.security import AuthError, BodyTooLarge, RequestTimeout
from dlforge.serve.settings import Settings

log = logging.getLogger("dlforge.serve")
CLIENT_CLOSED = 499  # nginx's code for "the client went away before the answer": counted, never sent


@dataclass
class ServeState:
    """Everything the routes need: settings, the repository, metrics and the inference threads."""

    settings: Settings
    repository: Repository = field(init=False)
    metrics: ServeMetrics = field(init=False)
    executor: ThreadPoolExecutor = field(init=False)
    accepting: bool = False  # between startup and shutdown: what /v2/health/ready reports


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
