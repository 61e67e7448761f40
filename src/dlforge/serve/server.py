"""Run the app under uvicorn: one process, or N worker processes sharing one port.

With N workers uvicorn needs an import string, so the settings go to each worker through an
environment variable. uvicorn handles SIGTERM gracefully: it stops accepting, lets open
requests finish, then runs our lifespan shutdown, which drains the batchers.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

import uvicorn

from dlforge.serve.settings import ENV_VAR, Settings

LOG_CONFIG_LEVEL = "info"


def run_server(settings: Settings) -> None:
    """Block serving until SIGINT/SIGTERM; returns after a graceful drain."""
    os.environ[ENV_VAR] = settings.to_env()
    # uvicorn drains on SIGTERM, then re-raises the signal; this handler turns that into exit status 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(
        "dlforge.serve.app:app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=LOG_CONFIG_LEVEL,
        access_log=False,  # our AccessLog middleware writes one JSON line per request instead
        timeout_graceful_shutdown=settings.request_timeout_s + 5,
    )


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    sys.exit(0)
