"""Every HTTP route in one table, and the handlers behind them (thin: parse → repository → batcher).

Handlers take the raw `Request` (no FastAPI parameter parsing, so no 422s) and turn any error into
`{"error": ...}` through the app's single status mapping.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import numpy as np
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import Response

from dlforge import __version__
from dlforge.export.inputs import check_values
from dlforge.serve import playground as pg
from dlforge.serve.forms import read_form
from dlforge.serve.images import top_k
from dlforge.serve.infer import answer_infer
from dlforge.serve.metrics import CONTENT_TYPE
from dlforge.serve.openapi import docs_page, openapi_document
from dlforge.serve.protocol import (
    HEADER_LENGTH,
    ModelMetadata,
    ProtocolError,
    RepositoryIndexRequest,
    shorten,
)
from dlforge.serve.repository import ModelInstance
from dlforge.serve.security import body_too_late, check_bearer
from dlforge.serve.state import ServeState, error_response, status_of, submit

Handler = Callable[[Request], Awaitable[Response]]
T = TypeVar("T")
MODEL = "/v2/models/{model}"
VERSIONED = "/v2/models/{model}/versions/{version}"


def routes(admin: bool, docs: bool = False, playground: bool = True) -> list[tuple[str, list[str], Handler]]:
    """(path, methods, handler) for the server; the repository API only with an admin token.

    openapi.py describes each of these paths (a test checks the two agree)."""
    table: list[tuple[str, list[str], Handler]] = [(f"{MODEL}/infer", ["POST"], infer)]  # matched first: hot
    table += [
        ("/v2/health/live", ["GET"], live),
        ("/v2/health/ready", ["GET"], ready),
        ("/v2", ["GET"], server_metadata),
        ("/metrics", ["GET"], metrics),
        ("/openapi.json", ["GET"], openapi),
        (f"{VERSIONED}/infer", ["POST"], infer),
        ("/v2/models", ["GET"], pg.list_models),
    ]
    for base in (MODEL, VERSIONED):
        table += [(base, ["GET"], model_metadata), (f"{base}/ready", ["GET"], model_ready),
                  (f"{base}/classify", ["POST"], classify), (f"{base}/card", ["GET"], pg.card)]
    if playground:
        table += [("/", ["GET"], pg.page), ("/playground/{model}", ["GET"], pg.page),
                  ("/playground/assets/{name}", ["GET"], pg.asset)]
    if admin:
        table += [("/v2/repository/index", ["POST"], repository_index),
                  ("/v2/repository/models/{model}/load", ["POST"], repository_load),
                  ("/v2/repository/models/{model}/unload", ["POST"], repository_unload)]
    if docs:
        table.append(("/docs", ["GET"], docs_route))
    return [(path, methods, _json_errors(handler)) for path, methods, handler in table]


def _json_errors(handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as exc:  # one mapping for every route; a runtime bug answers 500, the server stays up
            return error_response(exc)

    return guarded


def _state(request: Request) -> ServeState:
    state: ServeState = request.app.state.serve
    return state


def _model(request: Request, auth: bool = True) -> tuple[ServeState, ModelInstance]:
    state = _state(request)
    if auth:
        check_bearer(request, state.settings.tokens)
    return state, state.repository.get(request.path_params["model"], request.path_params.get("version"))


# --- health and metadata ---------------------------------------------------------------------


async def live(request: Request) -> Response:
    return JSONResponse({"live": True})


async def ready(request: Request) -> Response:
    state = _state(request)
    if not state.ready():
        return JSONResponse({"error": "not ready"}, status_code=503, headers={"Retry-After": "1"})
    return JSONResponse({"ready": True})


async def server_metadata(request: Request) -> Response:
    state = _state(request)
    return JSONResponse({"name": state.settings.server_name, "version": __version__,
                         "extensions": state.extensions()})


async def metrics(request: Request) -> Response:
    return Response(_state(request).metrics.render(), media_type=CONTENT_TYPE)


async def openapi(request: Request) -> Response:
    s = _state(request).settings
    return JSONResponse(openapi_document(admin=s.admin_token is not None, playground=s.playground, docs=s.docs))


async def docs_route(request: Request) -> Response:
    return docs_page()


async def model_metadata(request: Request) -> Response:
    state, instance = _model(request)
    codec = instance.codec  # what clients send and get: the task's view of the graph
    body = ModelMetadata(name=instance.name, versions=state.repository.versions(instance.name),
                         platform=instance.runtime.metadata.platform, inputs=codec.inputs, outputs=codec.outputs)
    return JSONResponse(body.model_dump(exclude_none=True))


async def model_ready(request: Request) -> Response:
    _, instance = _model(request)
    if not instance.batcher.running:
        return JSONResponse({"error": f"model '{instance.name}' is not ready"}, status_code=503,
                            headers={"Retry-After": "1"})
    return JSONResponse({"name": instance.name, "ready": True})


# --- inference --------------------------------------------------------------------------------


async def infer(request: Request) -> Response:
    started = time.monotonic()
    state, instance = _model(request)  # 401/403/404/503 before reading the body
    try:
        response = await _infer(state, request, started)
    except Exception as exc:
        state.metrics.observe_request(instance.name, instance.version, status_of(exc), time.monotonic() - started)
        raise
    state.metrics.observe_request(instance.name, instance.version, 200, time.monotonic() - started)
    return response


async def _infer(state: ServeState, request: Request, started: float) -> Response:
    payload, headers = await answer_infer(
        state, request.path_params["model"], request.path_params.get("version"), request.headers.get(HEADER_LENGTH),
        request.body, started)
    return Response(payload, headers=headers)


async def _in_time(state: ServeState, started: float, reading: Awaitable[T]) -> T:
    """Await a body read within `Settings.body_timeout_s` of the request's start (else 408)."""
    allowed = state.settings.body_timeout_s
    try:
        async with asyncio.timeout(started + allowed - time.monotonic()):
            return await reading
    except TimeoutError:
        raise body_too_late(allowed) from None


async def classify(request: Request) -> Response:
    """Multipart image or audio upload (field `file`) → top-k labels, via the package's preprocessing."""
    started = time.monotonic()
    state, instance = _model(request)  # 401/403/404/503 before reading the body
    try:
        response = await _classify(state, instance, request, started)
    except Exception as exc:
        state.metrics.observe_request(instance.name, instance.version, status_of(exc), time.monotonic() - started)
        raise
    state.metrics.observe_request(instance.name, instance.version, 200, time.monotonic() - started)
    return response


async def _classify(state: ServeState, instance: ModelInstance, request: Request, started: float) -> Response:
    if not instance.codec.ranks_labels:  # top-k labels mean nothing for a translation or an image generator
        raise ProtocolError(f"a {instance.manifest.task} model has no labels to rank; POST "
                            f"/v2/models/{instance.name}/infer with its inputs "
                            f"({', '.join(t.name for t in instance.codec.inputs)})")
    k = _int_param(request, "top_k", 5)
    form = await _in_time(state, started, read_form(request, max_files=1, max_fields=8))
    try:
        graph = await _decode_form(instance, form)
    finally:
        await form.close()
    _, instance = _model(request, auth=False)
    for name, batch in graph.items():
        check_values(f"input '{name}'", batch, instance.signature.rules)
    outputs = await submit(state, instance, graph, started)
    probabilities = outputs.get("probabilities", _softmax(next(iter(outputs.values()))))[0]
    predictions = top_k(probabilities, list(getattr(instance.manifest, "labels", []) or []), k)
    return JSONResponse({"model_name": instance.name, "model_version": instance.version, "predictions": predictions})


async def _decode_form(instance: ModelInstance, form: FormData) -> dict[str, np.ndarray]:
    """The graph's inputs from one text field or one uploaded file (decoded off the event loop)."""
    texts = [v for key, v in form.multi_items() if key == "text" and isinstance(v, str)]
    upload = next((v for v in form.values() if isinstance(v, UploadFile)), None)
    if texts:
        if len(texts) > 1:
            raise ProtocolError(f"send one text field per request (got {len(texts)}); /infer takes a batch as a "
                                "BYTES tensor")
        return await asyncio.to_thread(instance.codec.decode_texts, texts)
    if upload is None:
        raise ProtocolError("send the image or audio clip as a multipart/form-data file field, e.g. curl -F "
                            "file=@digit.png or -F file=@clip.wav (text models: a text field, e.g. curl -F "
                            "text='guten morgen')")
    return await asyncio.to_thread(instance.codec.decode_upload, await upload.read())  # decoding takes a while


def _int_param(request: Request, key: str, default: int) -> int:
    raw = request.query_params.get(key)
    if raw is None:
        return default
    # isdigit() alone accepts '²' and other digits int() refuses; ASCII digits only, and a sane length.
    if not (raw.isascii() and raw.isdigit() and 0 < len(raw) <= 6) or int(raw) < 1:
        raise ProtocolError(f"query parameter {key} must be a positive integer, got {shorten(repr(raw))} "
                            f"(e.g. ?{key}=3)")
    return int(raw)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


# --- repository extension (admin token) ------------------------------------------------------


def _admin(request: Request) -> ServeState:
    state = _state(request)
    check_bearer(request, [state.settings.admin_token or ""])
    return state


async def repository_index(request: Request) -> Response:
    state = _admin(request)
    body = await request.body()
    try:
        only_ready = RepositoryIndexRequest.model_validate_json(body).ready if body.strip() else False
    except ValidationError as exc:
        raise ProtocolError(f'invalid repository index request (send {{"ready": true}} or no body): '
                            f'{exc.errors()[0]["msg"]}') from None
    items = [i for i in state.repository.index() if i.state == "READY" or not only_ready]
    return JSONResponse([i.model_dump() for i in items])


async def repository_load(request: Request) -> Response:
    state = _admin(request)
    name = request.path_params["model"]
    await state.repository.load(name)
    state.metrics.refresh()
    return JSONResponse({"name": name, "versions": state.repository.versions(name), "state": "READY"})


async def repository_unload(request: Request) -> Response:
    state = _admin(request)
    name = request.path_params["model"]
    await state.repository.unload(name)
    state.metrics.refresh()
    return JSONResponse({"name": name, "state": "UNAVAILABLE"})


