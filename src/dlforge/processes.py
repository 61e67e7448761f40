"""Helper processes that must not outlive the process that started them (torch-free, stdlib only)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # prctl(2): the signal this process gets when its parent dies


def die_with_parent(parent: int, sig: signal.Signals = signal.SIGTERM) -> bool:
    """Get `sig` when `parent` dies, even by SIGKILL (Linux); False where the platform cannot promise it."""
    promised = False
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        promised = libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0
    if os.getppid() != parent:  # the parent died before the request above took effect
        os.kill(os.getpid(), sig)
    return promised
