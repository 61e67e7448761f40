"""Who may call and how much they may send: bearer tokens and the request body limit.

Tokens are compared with `hmac.compare_digest` so timing does not leak them. Our choice for
auth failures: no (or a non-Bearer) Authorization header → 401 with `WWW-Authenticate: Bearer`,
a wrong token → 403. The body limit is an ASGI middleware so it holds for every route: a
declared Content-Length over the limit is refused before reading anything, and a chunked body is
counted as it streams and refused as soon as it passes the limit.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dlforge.errors import UserError


class AuthError(UserError):
    """Missing (401) or wrong (403) credentials."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class BodyTooLarge(UserError):
    """The request body is over the configured limit (413)."""


class RequestTimeout(UserError):
    """The request body did not arrive within the request deadline (408)."""


def check_bearer(request: Request, tokens: Iterable[str]) -> None:
    """Raise AuthError unless the request carries one of `tokens` (no tokens: open)."""
    check_authorization(request.headers.get("authorization", ""), tokens)


def check_authorization(header: str, tokens: Iterable[str]) -> None:
    """The check behind both protocols: `header` is the HTTP header's or the gRPC metadata's value."""
    allowed = [t.encode() for t in tokens]
    if not allowed:
        return
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise AuthError(401, "missing bearer token: send 'Authorization: Bearer <token>'")
    # Compare against every token (no early exit) so timing does not tell which one nearly matched.
    matches = [hmac.compare_digest(given.strip().encode(), t) for t in allowed]
    if not any(matches):
        raise AuthError(403, "invalid token")


def body_too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"request body is over the limit of {limit} bytes")


def body_too_late(seconds: float) -> RequestTimeout:
    return RequestTimeout(f"the request body did not arrive within {seconds:g} s")


def declared_too_large(declared: bytes | None, limit: int) -> bool:
    """A Content-Length header over `limit`: refused before anything is read."""
    return declared is not None and declared.isdigit() and int(declared) > limit


def counting(receive: Receive, limit: int) -> Receive:
    """`receive`, raising BodyTooLarge as soon as the body read so far passes `limit` bytes."""
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > limit:  # raised inside the route's body read → the 413 handler
            raise body_too_large(limit)
        return message

    return counted


class BodyLimit:
    """ASGI middleware: 413 for bodies over `limit` bytes, without buffering them first."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if declared_too_large(dict(scope["headers"]).get(b"content-length"), self.limit):
            await _send_413(send, self.limit)
            return
        await self.app(scope, counting(receive, self.limit), send)


async def _send_413(send: Send, limit: int) -> None:
    body = json.dumps({"error": str(body_too_large(limit))}, separators=(",", ":")).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
