"""One JSON line per request on the `dlforge.serve.access` logger (ship it to any log pipeline)."""

from __future__ import annotations

import json
import logging
import os
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("dlforge.serve.access")


class AccessLog:
    """ASGI middleware: method, path, status, duration, client and worker pid for every HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 500  # if the app dies before answering

        async def recording(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording)
        finally:
            write_line(scope, status, started)


def write_line(scope: Scope, status: int, started: float) -> None:
    """The one access line format, for the middleware and for the infer fast path (fastpath.py)."""
    if not log.isEnabledFor(logging.INFO):
        return
    client = scope.get("client")
    log.info(json.dumps({
        "method": scope["method"], "path": scope["path"], "status": status,
        "ms": round((time.monotonic() - started) * 1000, 2),
        "client": client[0] if client else None,
        "pid": os.getpid(),  # which of the `--workers N` processes answered
    }))
