"""Handing freed heap back to the operating system: a leaf (stdlib only), for training and serving alike.

glibc keeps memory that a process has freed cached in its arenas (one per thread that allocated), so
the resident size stays at its high-water mark after one big batch or request: `malloc_trim` returns
the free pages of every arena. Elsewhere (macOS, musl) there is nothing to trim and this does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
from typing import Any


@functools.cache
def _libc() -> Any:
    return ctypes.CDLL("libc.so.6")


def release_free_memory(collect: bool = True) -> None:
    """Trim glibc's arenas, after a full garbage collection with `collect` (the collection holds the GIL)."""
    if collect:
        gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        _libc().malloc_trim(0)
