"""The app factory: settings → FastAPI app with a lifespan that loads models and drains them.

State lives on `app.state.serve` (one `ServeState` per app), never in globals, so a test can
run several apps in one process. Routes are declared in one table in routes.py; errors follow
one fixed mapping from exception kind to HTTP status, always answered as `{"error": "..."}`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import Request

from dlforge.serve.accesslog import AccessLog
from dlforge.serve.batcher import Batcher, BatcherStopped, DeadlineExceeded, QueueFull
from dlforge.serve.metrics import ServeMetrics
from dlforge.serve.protocol import ProtocolError
from dlforge.serve.repository import ModelInstance, ModelLoadFailed, ModelNotFound, ModelNotReady, Repository
from dlforge.serve.runtime import batch_latency, load_runtime
from dlforge.serve.security import AuthError, BodyLimit, BodyTooLarge
from dlforge.serve.settings import Settings
from dlforge.serve.state import ServeState
from dlforge.tasks import get_codec

__all__ = ["ServeState", "app_from_env", "create_app", "error_response", "status_of"]
log = logging.getLogger(__name__)
DEFAULT_BATCH, DEFAULT_DELAY_MS = 32, 5.0


def create_app(settings: Settings) -> FastAPI:
    """A V2 inference server for the package or repository at `settings.path`."""
    from dlforge.serve.routes import routes

    state = ServeState(settings)
    state.repository = Repository(settings.path, lambda n, v, p: _load_instance(state, n, v, p), settings.models)
    state.metrics = ServeMetrics(state.repository.batchers, multiprocess=settings.workers > 1)
    app = FastAPI(title="dlforge serve", lifespan=_lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.serve = state
    for path, methods, endpoint in routes(admin=settings.admin_token is not None, playground=settings.playground):
        # Plain Starlette routes: the handlers take the raw Request, so FastAPI's per-call dependency solving
        # would only cost time (~0.1 ms a request).
        app.router.add_route(path, endpoint, methods=methods)
    for kind in (Exception, HTTPException, RequestValidationError):
        app.add_exception_handler(kind, _handle)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(AccessLog)
    return app


def app_from_env() -> FastAPI:
    """Entry point for `uvicorn --factory` in each of N worker processes (settings from env)."""
    serve_log = logging.getLogger("dlforge.serve")  # access lines and model load reports
    if not serve_log.handlers:  # uvicorn configures only its own loggers
        serve_log.addHandler(logging.StreamHandler())
        serve_log.setLevel(logging.INFO)
        serve_log.propagate = False
    return create_app(Settings.from_env())


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: ServeState = app.state.serve
    state.executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="dlforge-infer")
    grpc_server = None
    try:
        await state.repository.load_all()
        state.metrics.refresh()  # with workers, scrapes answered by the others read what this one loaded
        if state.settings.grpc_port is not None:
            from dlforge.serve.grpc.server import start_grpc  # grpc is imported only when it is asked for

            grpc_server = await start_grpc(state)
        # Objects alive now live as long as the server: keep them out of every future collection, so a
        # full GC pass in the middle of a request stays short (the standard trick for long-lived servers).
        gc.freeze()
        state.accepting = True
        yield
    finally:
        # uvicorn has stopped accepting and waited for open requests; gRPC calls get the same grace, then
        # the batchers drain what is still queued.
        state.accepting = False
        if grpc_server is not None:
            from dlforge.serve.grpc.server import stop_grpc

            await stop_grpc(grpc_server, state.settings.request_timeout_s)
        await state.repository.close()
        state.executor.shutdown(wait=True)
        state.metrics.close()


async def _load_instance(state: ServeState, name: str, version: str, path: Path) -> ModelInstance:
    """Verify and open a package, warm its runtime up, and put a started batcher in front."""
    from dlforge.export.package import load_package

    s = state.settings
    package = await asyncio.to_thread(load_package, path)
    codec = get_codec(package)
    runtime = await asyncio.to_thread(load_runtime, s.runtime, package, s.threads())
    serving = getattr(package.manifest, "serving", None)
    max_batch = s.max_batch_size or getattr(serving, "max_batch_size", None) or DEFAULT_BATCH
    one_row = await asyncio.to_thread(batch_latency, runtime, 1)
    # A full batch only needs timing when even one row is under the inline threshold.
    full = await asyncio.to_thread(batch_latency, runtime, max_batch) if one_row * 1000 < s.inline_max_ms else None
    batcher = Batcher(
        runtime.infer,
        max_batch_size=max_batch,
        # Default delay: the model's own batch-1 latency, at most 5 ms. Waiting longer than one lone run takes
        # cannot pay off, so tiny models flush at once (as Triton's default 0) and heavy ones gather a batch.
        max_queue_delay_ms=_first(s.max_queue_delay_ms, getattr(serving, "max_queue_delay_ms", None),
                                  min(DEFAULT_DELAY_MS, one_row * 1000)),
        max_queue_size=s.max_queue_size,
        executor=state.executor,
        on_batch=state.metrics.on_batch(name, version),
        inline=full is not None and full * 1000 < s.inline_max_ms,
        pad=codec.pad,
    )
    log.info("loaded %s version %s: %.3f ms at batch 1; max batch %d; queue delay %.3f ms; batches run %s",
             name, version, one_row * 1000, max_batch, batcher.max_queue_delay * 1000,
             "on the event loop" if batcher.inline else "on the inference threads")
    await batcher.start()
    return ModelInstance(name, version, package.manifest, runtime, batcher, codec)


def _first(*values: float | None) -> float:
    return next(v for v in values if v is not None)


# --- errors -----------------------------------------------------------------------------------

_STATUS: list[tuple[type[BaseException], int]] = [
    (ProtocolError, 400), (RequestValidationError, 400), (ModelLoadFailed, 400),
    (ModelNotFound, 404), (BodyTooLarge, 413),
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
    status = status_of(exc)
    headers: dict[str, str] = {}
    if status == 500:
        log.error("unexpected error: %r", exc, exc_info=exc)
    message = _message(exc, status)
    if status == 503:
        headers["Retry-After"] = "1"
    elif status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    elif status == 413:
        headers["Connection"] = "close"  # the rest of the body was not read
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _message(exc: BaseException, status: int) -> str:
    if isinstance(exc, RequestValidationError):
        return "invalid request: " + "; ".join(str(e.get("msg")) for e in exc.errors()[:5])
    if isinstance(exc, HTTPException):
        return str(exc.detail)
    if status == 500:
        return f"internal error ({type(exc).__name__}: {exc}); the server is still running"
    return str(exc)


async def _handle(request: Request, exc: Any) -> JSONResponse:
    return error_response(exc)
