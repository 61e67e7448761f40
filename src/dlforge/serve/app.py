"""The app factory: settings → FastAPI app with a lifespan that loads models and drains them.

State lives on `app.state.serve` (one `ServeState` per app, state.py), never in globals, so a test can
run several apps in one process. Routes are declared in one table in routes.py; errors follow one
fixed mapping from exception kind to HTTP status (state.py), always answered as `{"error": "..."}`.
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

from dlforge.export.inputs import InputRules
from dlforge.serve.accesslog import AccessLog
from dlforge.serve.batcher import Batcher
from dlforge.serve.fastpath import InferFastPath
from dlforge.serve.http import GuardedHttpToolsProtocol
from dlforge.serve.metrics import ServeMetrics
from dlforge.serve.policy import batch_size, resolve_policy
from dlforge.serve.repository import ModelInstance, Repository
from dlforge.serve.routes import routes
from dlforge.serve.runtime import batch_latency, load_runtime
from dlforge.serve.security import BodyLimit
from dlforge.serve.settings import Settings
from dlforge.serve.state import ServeState, error_response, status_of
from dlforge.serve.validate import ModelSignature, row_bytes
from dlforge.taskapi import get_codec

__all__ = ["ServeState", "app_from_env", "create_app", "error_response", "status_of"]
log = logging.getLogger(__name__)


def create_app(settings: Settings) -> InferFastPath:
    """A V2 inference server for the package or repository at `settings.path`: the routed FastAPI app behind
    the infer fast path (fastpath.py)."""
    state = ServeState(settings)
    state.repository = Repository(settings.path, lambda n, v, p: _load_instance(state, n, v, p), settings.models)
    state.metrics = ServeMetrics(state.repository.batchers, multiprocess=settings.processes > 1)
    app = FastAPI(title="dlforge serve", lifespan=_lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.serve = state
    for path, methods, endpoint in routes(admin=settings.admin_token is not None, docs=settings.docs,
                                          playground=settings.playground):
        # Plain Starlette routes: the handlers take the raw Request, so FastAPI's per-call dependency solving
        # would only cost time (~0.1 ms a request).
        app.router.add_route(path, endpoint, methods=methods)
    for kind in (Exception, HTTPException, RequestValidationError):
        app.add_exception_handler(kind, _handle)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    if settings.access_log:
        app.add_middleware(AccessLog)
    return InferFastPath(app)


def app_from_env() -> InferFastPath:
    """Entry point for `uvicorn --factory` in each of N worker processes (settings from env)."""
    from dlforge.serve.server import configure_logging, configure_process

    configure_logging()
    settings = Settings.from_env()
    configure_process(settings)
    app = create_app(settings)
    GuardedHttpToolsProtocol.shed_check = app.shed_response  # this process serves this one app
    return app


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
    """Verify and open a package, warm its runtime up, resolve its batching policy, start its batcher."""
    from dlforge.export.package import load_package

    s = state.settings
    package = await asyncio.to_thread(load_package, path)
    codec = get_codec(package)
    runtime = await asyncio.to_thread(load_runtime, s.runtime, package, s.threads())
    serving = package.manifest.serving
    one_row = await asyncio.to_thread(batch_latency, runtime, 1)
    max_batch = batch_size(s, serving)
    # A full batch only needs timing when even one row is under the inline threshold.
    full = await asyncio.to_thread(batch_latency, runtime, max_batch) if one_row * 1000 < s.inline_max_ms else None
    signature = ModelSignature.of(codec, InputRules.from_preprocessing(package.manifest.preprocessing,
                                                                       s.allow_nonfinite))
    # One row's decoded size bounds the rows per request: the larger of what clients send and what the
    # codec hands the graph (a text row becomes token ids).
    per_row = max(signature.row_bytes(), row_bytes(runtime.metadata.inputs))
    policy = resolve_policy(s, serving, one_row, full, per_row)
    batcher = Batcher(runtime.infer, max_batch_size=policy.max_batch_size,
                      max_queue_delay_ms=policy.max_queue_delay_ms, max_queue_size=policy.max_queue,
                      max_inflight=policy.max_inflight, executor=state.executor,
                      on_batch=state.metrics.on_batch(name, version),
                      inline=policy.inline, batch_seconds=policy.batch_seconds, pad=codec.pad,
                      output_pad=codec.output_pad)
    log.info("loaded %s version %s: %.3f ms at batch 1; %s", name, version, one_row * 1000, policy.describe())
    await batcher.start()
    return ModelInstance(name, version, package.manifest, runtime, batcher, codec,
                         signature.limited(policy.max_batch_rows))


async def _handle(request: Request, exc: Any) -> JSONResponse:
    return error_response(exc)
