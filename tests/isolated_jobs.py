"""Jobs for dlforge.synth.isolated tests, importable in a spawned process without torch: a real
segfault, a real hang, an error and a result."""

from __future__ import annotations

import ctypes
import time


def job(kind: str) -> str:
    if kind == "segfault":
        ctypes.string_at(0)  # reads address 0: SIGSEGV, as libespeak-ng did on a Spanish voice
    if kind == "hang":
        time.sleep(3600)
    if kind == "error":
        raise ValueError("no such voice")
    return kind.upper()
