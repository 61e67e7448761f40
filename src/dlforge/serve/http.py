"""uvicorn's httptools protocol with the two limits it lacks: header size and header time.

Everything else (parsing, keep-alive timeout, `limit_concurrency`) is uvicorn's and httptools'
own; this subclass only counts the bytes a request's line and headers have taken so far and starts a
timer when a connection opens or a request begins, using the parser's own callbacks. Without it, one
200 MiB header is buffered whole, and a client that sends a header byte every few seconds (slowloris)
holds its connection, and a file descriptor, forever.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """Refuses a request whose line and headers exceed `max_header_bytes` (431) or do not arrive
    within `header_timeout_s` of the connection opening or the request starting (408); then closes."""

    max_header_bytes: ClassVar[int] = 64 << 10
    header_timeout_s: ClassVar[float] = 10.0

    @classmethod
    def configure(cls, max_header_bytes: int, header_timeout_s: float) -> None:
        """Set the limits for this process (called where the app is built, so `--workers` get them too)."""
        cls.max_header_bytes, cls.header_timeout_s = max_header_bytes, header_timeout_s

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_bytes = 0
        self._in_headers = True  # a fresh connection owes us a request line
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        if self._in_headers and self._header_bytes > self.max_header_bytes:
            self._refuse(431, "Request Header Fields Too Large",
                         f"the request line and headers are over {self.max_header_bytes} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers, self._header_bytes = True, 0
        self._arm()

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._disarm()
        super().on_headers_complete()

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self._in_headers:
            seconds = self.header_timeout_s
            self._refuse(408, "Request Timeout", f"the request headers did not arrive within {seconds:g} s")

    def _refuse(self, status: int, reason: str, message: str) -> None:
        """Answer once with `{"error": ...}` and close: the rest of this connection cannot be trusted."""
        self._in_headers = False
        self._disarm()
        if self.transport.is_closing():
            return
        body = json.dumps({"error": message}).encode()
        self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                             b"connection: close\r\n\r\n%s" % (status, reason.encode(), len(body), body))
        self.transport.close()
