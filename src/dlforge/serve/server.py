"""Run the app under uvicorn: one process, or N worker processes sharing one port.

With N workers uvicorn needs an import string, so the settings go to each worker through an
environment variable. So does the directory where the workers' Prometheus values meet (see
metrics.py): a fresh one per run, removed at exit. On SIGTERM uvicorn stops accepting and asks each
connection to shut down (http.py drains them without resetting a request), waits for open requests, then
runs our lifespan shutdown, which stops gRPC (calls in flight finish) and drains the batchers.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
import sys
import tempfile
from collections.abc import Iterator
from types import FrameType

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess

from dlforge.errors import UserError
from dlforge.processes import die_with_parent
from dlforge.serve.http import GuardedHttpToolsProtocol
from dlforge.serve.settings import ENV_VAR, Settings
from dlforge.serve.workers import resolve_workers

log = logging.getLogger("dlforge.serve")
PARENT_VAR = "DLFORGE_SERVE_PARENT"  # the pid --workers children must outlive no longer

LOG_CONFIG_LEVEL = "info"
METRICS_DIR_VAR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's multiprocess mode


class PortInUse(UserError):
    """A port the server was told to listen on is taken (or not allowed)."""


def run_server(settings: Settings) -> None:
    """Block serving until SIGINT/SIGTERM; returns after a graceful drain."""
    check_ports(settings)
    configure_logging()
    settings = resolve_workers(settings)  # no --workers: chosen now, before the processes start
    os.environ[ENV_VAR] = settings.to_env()
    os.environ[PARENT_VAR] = str(os.getpid())
    # uvicorn drains on SIGTERM, then re-raises the signal; this handler turns that into exit status 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    _raise_fd_limit()
    with _shared_metrics_dir(settings.processes):
        config = uvicorn.Config(
            "dlforge.serve.app:app_from_env",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.processes,
            log_level=LOG_CONFIG_LEVEL,
            access_log=False,  # our AccessLog middleware writes one JSON line per request instead
            timeout_graceful_shutdown=math.ceil(settings.request_timeout_s) + 5,
            # The limits uvicorn has: idle keep-alive, and the time a (re)started worker may take to answer the
            # supervisor's health ping (model loading). The connection limit is our protocol's (http.py).
            http=GuardedHttpToolsProtocol,  # adds header size and time limits, the connection limit and drain
            timeout_keep_alive=settings.keep_alive_s,
            timeout_worker_healthcheck=settings.worker_start_timeout_s,
            h11_max_incomplete_event_size=settings.max_header_bytes,  # if uvicorn ever falls back to h11
        )
        if settings.processes > 1:
            DrainingSupervisor(config, sockets=[config.bind_socket()]).run()
            return
        server = uvicorn.Server(config)
        server.run()
        if not server.started:
            sys.exit(STARTUP_FAILURE)


class DrainingSupervisor(Multiprocess):
    """uvicorn's worker supervisor, closing its own copy of the listening socket before the workers drain.

    The parent holds the socket the workers accept on; while it stays open, connections made during the
    drain wait in the kernel's backlog that no worker accepts any more, and are reset when the parent exits.
    Closed first, a new connection is refused at once and the client can go elsewhere."""

    def handle_term(self) -> None:
        for sock in self.sockets:
            sock.close()
        super().handle_term()

    def handle_int(self) -> None:
        for sock in self.sockets:
            sock.close()
        super().handle_int()


def check_ports(settings: Settings) -> None:
    """Say that a port is taken before any model loads: one error line, not a worker's traceback later.

    The gRPC port is bound by each worker after its models load (inside the app's lifespan), so without
    this a taken --grpc-port surfaced as a startup traceback. A port taken in the moment between this
    check and the real bind still fails there (GrpcBindError, or uvicorn's own message)."""
    if settings.grpc_port and settings.grpc_port == settings.port:
        raise PortInUse(f"--grpc-port {settings.grpc_port}: the same as --port; give gRPC a port of its own")
    for flag, port in (("--port", settings.port), ("--grpc-port", settings.grpc_port)):
        if port:  # None: gRPC off; 0: the system picks a free port
            _try_bind(flag, settings.host, port)


def _try_bind(flag: str, host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind: TIME_WAIT is no conflict
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise PortInUse(f"{flag} {port}: cannot listen on {host}:{port} ({exc.strerror or exc}); choose another "
                            "port or stop the process that holds it") from None


def configure_logging() -> None:
    """Our `dlforge.serve` lines (access log, model loads, the worker choice) on stderr: uvicorn configures
    only its own loggers."""
    serve_log = logging.getLogger("dlforge.serve")
    if not serve_log.handlers:
        serve_log.addHandler(logging.StreamHandler())
        serve_log.setLevel(logging.INFO)
        serve_log.propagate = False


def configure_process(settings: Settings) -> None:
    """In each serving process: the header limits, and with workers, die with the parent process."""
    GuardedHttpToolsProtocol.configure(settings.max_header_bytes, settings.header_timeout_s,
                                       settings.limit_concurrency)
    parent = os.environ.get(PARENT_VAR)
    # SIGTERM (a graceful drain) when the parent dies, even by SIGKILL, so no orphan keeps the port
    if (settings.processes > 1 and parent is not None and int(parent) != os.getpid()
            and not die_with_parent(int(parent))):
        log.warning("could not ask to be stopped with the parent process (prctl failed)")


def _raise_fd_limit() -> None:
    """Many idle clients need many file descriptors: lift the soft limit to the hard one (as servers do)."""
    try:
        import resource
    except ImportError:  # not on this platform
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


@contextlib.contextmanager
def _shared_metrics_dir(workers: int) -> Iterator[None]:
    """With workers, an empty directory for their metric files, set before they start (and import prometheus_client).

    Fresh every run: files left by an earlier run would add its counts to this one's."""
    if workers == 1:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="dlforge-metrics-") as path:
        os.environ[METRICS_DIR_VAR] = path
        try:
            yield
        finally:
            del os.environ[METRICS_DIR_VAR]


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    sys.exit(0)
