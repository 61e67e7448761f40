"""The hot route, POST /v2/models/{model}[/versions/{version}]/infer, answered straight from ASGI.

A profile of a tiny model under load (docs/serving.md) put 17 % of a request's CPU in the framework's
middleware layers and routing. This wrapper answers the one route that carries the traffic itself and
hands every other request, and the lifespan, to the FastAPI app. It does what the routed path does, in
the same order and with the same errors: bearer token, body limit (declared and counted), body deadline,
the shared infer core (infer.py), metrics, the access line; tests run the infer checks against it.
"""

from __future__ import annotations

import json
import time

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from dlforge.serve import accesslog, protocol
from dlforge.serve.batcher import QueueFull, in_flight_message
from dlforge.serve.http import SHED
from dlforge.serve.infer import answer_infer
from dlforge.serve.security import body_too_large, check_authorization, counting, declared_too_large
from dlforge.serve.state import ServeState, error_response, status_of

HEADER_LENGTH = protocol.HEADER_LENGTH.lower().encode()  # ASGI header names come lower-cased
HEALTH = "/v2/health/"  # probes are answered even over the connection limit: they are cheap and must not flap
_OVER_LIMIT = JSONResponse({"error": "the server has too many open connections; retry after the Retry-After "
                                     "seconds"}, status_code=503, headers={"Retry-After": "1", "Connection": "close"})


def infer_target(path: str) -> tuple[str, str | None] | None:
    """(model, version or None) when `path` is an infer route, else None; as the router matches `{model}`."""
    parts = path.split("/")
    if parts[-1] != "infer" or parts[:3] != ["", "v2", "models"] or not all(parts[3:-1]):
        return None
    if len(parts) == 5:
        return parts[3], None
    if len(parts) == 7 and parts[4] == "versions":
        return parts[3], parts[5]
    return None


class InferFastPath:
    """ASGI app: infer requests answered here, everything else by `app`."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app  # the routed app: every other route, the lifespan, and infer when used on its own
        self.state = app.state  # tests and embedders reach the ServeState as `app.state.serve`, as before
        self.serve: ServeState = app.state.serve
        self._refusals: dict[int, bytes] = {}  # max_inflight → the whole HTTP response refusing a request

    def shed_response(self, method: bytes, path: str, headers: list[tuple[bytes, bytes]]) -> bytes | None:
        """For the HTTP protocol, before any ASGI work (http.py): the complete 503 for an infer request that the
        model's in-flight bound would refuse, counted as the app counts it; None for anything else."""
        if method != b"POST" or (target := infer_target(path)) is None:
            return None
        state = self.serve
        try:
            if state.settings.tokens:  # an unauthorised caller gets its 401 from the app, not a hint of load
                auth = next((v for k, v in headers if k == b"authorization"), b"").decode("latin-1")
                check_authorization(auth, state.settings.tokens)
            instance = state.repository.get(*target)
        except Exception:  # 401/403/404/503: the app answers them
            return None
        batcher = instance.batcher
        if batcher.max_inflight is None or batcher.inflight < batcher.max_inflight:
            return None
        batcher.rejected += 1
        state.metrics.shed.labels("http", "in_flight").inc()
        state.metrics.observe_request(instance.name, instance.version, 503, 0.0)
        if (answer := self._refusals.get(batcher.max_inflight)) is None:
            body = json.dumps({"error": in_flight_message(batcher.max_inflight)}).encode()
            answer = self._refusals[batcher.max_inflight] = (
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(body), body))
        return answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get(SHED) and not scope["path"].startswith(HEALTH):  # over the connection limit (http.py)
            self.serve.metrics.shed.labels("http", scope[SHED]).inc()
            await _over_connection_limit(scope, receive, send)
            return
        if scope["type"] != "http" or scope["method"] != "POST" or (target := infer_target(scope["path"])) is None:
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 500
        try:
            status = await self._infer(scope, receive, send, *target, started)
        finally:
            if self.serve.settings.access_log:
                accesslog.write_line(scope, status, started)

    async def _infer(self, scope: Scope, receive: Receive, send: Send, model: str, version: str | None,
                     started: float) -> int:
        state = self.serve
        headers = _headers(scope)
        limit = state.settings.max_body_bytes
        instance = None
        try:
            if declared_too_large(headers.get(b"content-length"), limit):
                raise body_too_large(limit)
            check_authorization(headers.get(b"authorization", b"").decode("latin-1"), state.settings.tokens)
            instance = state.repository.get(model, version)  # 404/503 before reading the body
            length = headers.get(HEADER_LENGTH)
            payload, extra = await answer_infer(
                state, model, version, None if length is None else length.decode("latin-1"),
                lambda: _read_body(counting(receive, limit)), started)
        except Exception as exc:  # the app's one mapping: a bug answers 500 and the server stays up
            status = status_of(exc)
            if isinstance(exc, QueueFull):
                state.metrics.shed.labels("http", exc.reason).inc()
            if instance is not None:
                state.metrics.observe_request(instance.name, instance.version, status, time.monotonic() - started)
            await error_response(exc)(scope, receive, send)
            return status
        state.metrics.observe_request(instance.name, instance.version, 200, time.monotonic() - started)
        out = [(b"content-length", b"%d" % len(payload))]
        out += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]
        await send({"type": "http.response.start", "status": 200, "headers": out})
        await send({"type": "http.response.body", "body": payload})
        return 200


async def _over_connection_limit(scope: Scope, receive: Receive, send: Send) -> None:
    """503 + Retry-After, and the connection closed (it is one too many); the body is not read."""
    await _OVER_LIMIT(scope, receive, send)


def _headers(scope: Scope) -> dict[bytes, bytes]:
    """Lower-case names (ASGI servers send them so); the first value of a repeated header wins."""
    found: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        found.setdefault(name, value)
    return found


async def _read_body(receive: Receive) -> bytes:
    """The whole body (`receive` counts it against the limit; the caller holds the deadline)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
