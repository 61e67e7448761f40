"""Run jobs each in a fresh spawned process, a few at a time, so one that crashes (a segfault in a C
library) or hangs costs only its own result: the caller gets a reason instead of a dead pool.

A fresh process per job is also what makes C libraries with global state (libespeak-ng) deterministic:
every job starts from the same library state.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any


@dataclass(frozen=True)
class Failed:
    """Why a job gave no result: its exception, its exit signal or its timeout."""

    reason: str


def _child(conn: Connection, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        conn.send(("ok", fn(*args)))
    except Exception as exc:  # any error of one job is that job's result
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


@dataclass
class _Running:
    index: int
    process: Any  # multiprocessing.process.BaseProcess
    conn: Connection
    deadline: float
    reply: tuple[str, Any] | None = None


def run_isolated(fn: Callable[..., Any], jobs: Sequence[tuple[Any, ...]], workers: int,
                 timeout_s: float) -> list[Any]:
    """`fn(*args)` for every args in `jobs`, at most `workers` processes at a time, each killed after
    `timeout_s` seconds; the results in order, a `Failed` where a job raised, died or timed out."""
    ctx = multiprocessing.get_context("spawn")
    results: list[Any] = [None] * len(jobs)
    waiting, running = list(range(len(jobs)))[::-1], list[_Running]()
    while waiting or running:
        while waiting and len(running) < max(1, workers):
            index = waiting.pop()
            receive, send = ctx.Pipe(duplex=False)
            process = ctx.Process(target=_child, args=(send, fn, jobs[index]), daemon=True)
            process.start()
            send.close()  # the child holds the only writer: its death is an EOF here
            running.append(_Running(index, process, receive, time.monotonic() + timeout_s))
        time.sleep(0.02)
        for job in list(running):
            outcome = _poll(job)
            if outcome is not None:
                results[job.index] = outcome
                running.remove(job)
    return results


def _poll(job: _Running) -> Any:
    """The job's result once it is over (read before join: a large reply fills the pipe), else None."""
    if job.reply is None and job.conn.poll():
        try:
            job.reply = job.conn.recv()
        except EOFError:
            job.reply = ("died", None)
    if job.reply is None and time.monotonic() > job.deadline:
        job.process.kill()
        job.process.join()
        job.conn.close()
        return Failed("hung: killed after its time limit")
    if job.reply is None:
        return None
    job.process.join()
    job.conn.close()
    kind, value = job.reply
    if kind == "ok":
        return value
    if kind == "error":
        return Failed(value)
    code = job.process.exitcode
    return Failed(f"its process died (signal {-code})" if code and code < 0 else f"its process exited with {code}")
