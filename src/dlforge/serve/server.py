"""Run the app under uvicorn: one process, or N worker processes sharing one port.

With N workers uvicorn needs an import string, so the settings go to each worker through an
environment variable. So does the directory where the workers' Prometheus values meet (see
metrics.py): a fresh one per run, removed at exit. uvicorn handles SIGTERM gracefully: it stops
accepting, lets open requests finish, then runs our lifespan shutdown, which drains the batchers.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import tempfile
from collections.abc import Iterator
from types import FrameType

import uvicorn

from dlforge.serve.settings import ENV_VAR, Settings

LOG_CONFIG_LEVEL = "info"
METRICS_DIR_VAR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's multiprocess mode


def run_server(settings: Settings) -> None:
    """Block serving until SIGINT/SIGTERM; returns after a graceful drain."""
    os.environ[ENV_VAR] = settings.to_env()
    # uvicorn drains on SIGTERM, then re-raises the signal; this handler turns that into exit status 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    with _shared_metrics_dir(settings.workers):
        uvicorn.run(
            "dlforge.serve.app:app_from_env",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=LOG_CONFIG_LEVEL,
            access_log=False,  # our AccessLog middleware writes one JSON line per request instead
            timeout_graceful_shutdown=math.ceil(settings.request_timeout_s) + 5,
        )


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
