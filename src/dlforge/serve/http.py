"""uvicorn's httptools protocol with the limits it lacks, and a shutdown that does not reset requests.

Parsing and the keep-alive timeout are uvicorn's and httptools' own. This subclass adds:
- header size and header time: it counts the bytes a request's line and headers have taken so far and
  starts a timer when a connection opens or a request begins, using the parser's own callbacks. Without
  it, one 200 MiB header is buffered whole, and a client that sends a header byte every few seconds
  (slowloris) holds its connection, and a file descriptor, forever;
- the connection limit (uvicorn's `limit_concurrency`, done here instead): over it, a request is marked
  in its scope (SHED) and the app answers 503 with Retry-After and counts it, where uvicorn answered a
  bare 503 and logged a warning line per request;
- cheap load shedding (`shed_check`, set by the serving process's app): a request the app would refuse
  for load anyway is answered with the app's ready-made 503 right when its headers are parsed, and its
  body skipped, without an ASGI task. Clients that retry at once (wrk, or most load generators) send
  several refused requests for each admitted one; at ~0.15 ms each through the app they filled the event
  loop's turns, and the admitted requests waited behind them (server-side p50 460 ms at 512 clients);
- a draining shutdown: uvicorn closed an idle keep-alive connection at once, resetting a request the
  client had just sent on it (under load, every connection between two requests), and answered the
  requests in progress with `Connection: close` at once, so their clients reconnected while the other
  `--workers` were still closing their listening sockets: into the kernel's accept queue, which is reset
  when the last one closes. Here every connection is served as before for DRAIN_KEEP_S (every process
  stops listening meanwhile: a new connection is refused, not reset); then the request in progress, or
  the one that arrives within DRAIN_IDLE_S on an idle connection, is answered with `Connection: close`.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import Callable
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

ShedCheck = Callable[[bytes, str, list[tuple[bytes, bytes]]], bytes | None]  # method, path, headers → a response
SHED = "dlforge.shed"  # scope key: the connection limit refused this request (the app answers 503)
DRAIN_KEEP_S = 0.5  # at shutdown, connections are served as before while every worker stops listening
DRAIN_IDLE_S = 1.0  # then how long an idle keep-alive connection may still bring a request


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """Refuses a request whose line and headers exceed `max_header_bytes` (431) or do not arrive
    within `header_timeout_s` of the connection opening or the request starting (408); then closes.
    Marks requests over `max_connections` (open connections or requests in progress) for a 503."""

    max_header_bytes: ClassVar[int] = 64 << 10
    header_timeout_s: ClassVar[float] = 10.0
    max_connections: ClassVar[int | None] = None
    shed_check: ClassVar[ShedCheck | None] = None  # the whole response for a request refused for load, else None

    @classmethod
    def configure(cls, max_header_bytes: int, header_timeout_s: float, max_connections: int | None = None) -> None:
        """Set the limits for this process (called where the app is built, so `--workers` get them too)."""
        cls.max_header_bytes, cls.header_timeout_s = max_header_bytes, header_timeout_s
        cls.max_connections = max_connections

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_bytes = 0
        self._in_headers = True  # a fresh connection owes us a request line
        self._header_timer: asyncio.TimerHandle | None = None
        self._partial = False  # a request has begun and its headers are not complete
        self._skipping = False  # answered when its headers were parsed (shed): its body is ignored
        self._draining = False
        self._drain_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._drain_timer is not None:
            self._drain_timer.cancel()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """Graceful shutdown (uvicorn calls it once listening has stopped): see the module's docstring."""
        self._drain_timer = self.loop.call_later(DRAIN_KEEP_S, self._start_closing)

    def _start_closing(self) -> None:
        """Finish the request in progress, or wait a moment for one already on its way; then close."""
        self._draining = True
        if self.cycle is None or self.cycle.response_complete:
            self._drain_timer = self.loop.call_later(DRAIN_IDLE_S, self._close_if_idle)
        else:
            self._drain_timer = None
            self.cycle.keep_alive = False

    def _close_if_idle(self) -> None:
        self._drain_timer = None
        idle = self.cycle is None or self.cycle.response_complete
        if idle and not self._partial and not self.transport.is_closing():
            self.transport.close()  # a request still arriving is left to the header timer

    def data_received(self, data: bytes) -> None:
        if self._in_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        if self._in_headers and self._header_bytes > self.max_header_bytes:
            self._refuse(431, "Request Header Fields Too Large",
                         f"the request line and headers are over {self.max_header_bytes} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers, self._header_bytes, self._partial = True, 0, True
        self._arm()

    def on_headers_complete(self) -> None:
        self._in_headers = self._partial = False
        self._disarm()
        if self._shed():
            return
        limit = self.max_connections
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            self.scope[SHED] = "connections"  # type: ignore[literal-required]
        super().on_headers_complete()
        if self._draining and self.cycle is not None:
            self.cycle.keep_alive = False  # answered, then closed

    def _shed(self) -> bool:
        """Answer a request refused for load now (see the module docstring); False: the app handles it.

        Only between requests (a pipelined one must answer in order), on a keep-alive connection (closing with
        its body unread would reset the connection before the client reads the answer), and not for a client
        waiting for `100 Continue` (it may never send the body the parser would wait for)."""
        check = GuardedHttpToolsProtocol.shed_check  # read from the class: a function stored there is not a method
        idle = self.cycle is None or self.cycle.response_complete
        if (check is None or not idle or self._draining or self.expect_100_continue
                or not self.parser.should_keep_alive()):
            return False
        path = self.url.partition(b"?")[0].decode("latin-1")
        answer = check(self.parser.get_method(), urllib.parse.unquote(path) if "%" in path else path, self.headers)
        if answer is None:
            return False
        self._skipping = True
        self.transport.write(answer)
        return True

    def on_body(self, body: bytes) -> None:
        if not self._skipping:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._skipping:
            super().on_message_complete()
            return
        self._skipping = False
        self.server_state.total_requests += 1  # as uvicorn counts an answered request, then waits for the next
        if not self.transport.is_closing():
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                                self.timeout_keep_alive_handler)

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
