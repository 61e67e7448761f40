"""Dynamic batching for one model instance: concurrent requests become one call of the model.

Pure asyncio + numpy. Requests wait in a bounded queue, one future each. A single loop task takes
the oldest request and the compatible ones behind it (same input names, trailing shapes and
dtypes) until the batch has `max_batch_size` rows or the oldest has waited `max_queue_delay_ms`,
concatenates them along axis 0, runs the model in an executor so the event loop stays free, and
splits the outputs back by each request's row count. All times are `time.monotonic()` seconds.

Idle flush (`flush_when_idle`, on by default): a request that arrives to an empty queue while no
batch is computing, and is still alone after one turn of the event loop, runs at once instead of
waiting `max_queue_delay_ms` for company that is not coming (at concurrency 1 the client waits for
the answer before it sends again). Requests that arrive while a batch computes, or together with
others, batch as usual: the delay is spent only when there is evidence of concurrent load.

Inline runs (`inline`, off by default): batches run on the event loop thread itself, and a lone
request on an idle batcher runs straight from `submit` without waking the loop task. The server turns
this on only for models whose measured full-batch latency is small (default under 2 ms): a hand-off to
an executor thread and back costs ~0.2-0.3 ms on a busy small machine, several times a tiny model's
whole batch, so for them the hop is pure overhead. Batches larger than `max_batch_size` (one big
request) never run inline: they would hold the loop for longer than it was measured for.

Admission: a request is refused at once (QueueFull, 503) when `max_inflight` requests are already
admitted (`admitted`, held from before the body is read until the answer), when `max_queue_size` wait,
or when the work queued ahead of it, in batches at the measured seconds per batch, could not finish
before its deadline, instead of queueing it only to time out. A request with more rows than
`max_batch_size` runs in slices of that size, and stops between slices once its caller has gone or its
deadline has passed: no work that nobody waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from dlforge.serve.policy import MAX_BATCH_SIZE, MAX_QUEUE_DELAY_MS, BatchPolicy

log = logging.getLogger(__name__)

Tensors = dict[str, np.ndarray]
RunBatch = Callable[[Tensors], Tensors]  # rows along axis 0 in, the same rows along axis 0 out


class BatcherError(Exception):
    """A request the batcher refused or could not finish; each subclass is one HTTP status."""


class QueueFull(BatcherError):
    """The queue is full: the client should retry later (503 with Retry-After).

    `reason` says which bound refused it, for the shed counter: in_flight, queue or deadline."""

    def __init__(self, message: str, reason: str = "queue") -> None:
        super().__init__(message)
        self.reason = reason


class DeadlineExceeded(BatcherError):
    """The deadline passed before the request was run; it was not computed (504)."""


class BatcherStopped(BatcherError):
    """The batcher is not running, or stopped before running the request (503)."""


@dataclass(frozen=True)
class BatchStats:
    """One finished batch, handed to `on_batch` so a metrics layer can observe it."""

    rows: int
    requests: int
    queue_times: tuple[float, ...]  # seconds each request waited before the batch started
    compute_time: float  # seconds spent concatenating, in run_batch and splitting
    error: Exception | None
    waiting: int = 0  # requests still queued when the batch finished


@dataclass
class _Request:
    inputs: Tensors
    rows: int
    key: tuple[Any, ...]  # what must match to concatenate
    deadline: float | None
    enqueued: float
    future: asyncio.Future[Tensors]
    idle: bool = False  # arrived to an empty queue with no batch computing


class Batcher:
    """Groups concurrent `submit` calls into batches for `run_batch`; one loop task per instance.

    Usage: `await b.start()`, then `await b.submit(inputs, deadline)` from any number of tasks,
    and `await b.stop()` at shutdown. A failing batch fails only its own requests.
    """

    def __init__(
        self,
        run_batch: RunBatch,
        *,
        max_batch_size: int = MAX_BATCH_SIZE,
        max_queue_delay_ms: float = MAX_QUEUE_DELAY_MS,
        max_queue_size: int = BatchPolicy.max_queue,
        max_inflight: int | None = None,
        executor: Executor | None = None,
        on_batch: Callable[[BatchStats], None] | None = None,
        flush_when_idle: bool = True,
        inline: bool = False,
        batch_seconds: float = 0.0,
        pad: dict[str, int | float] | None = None,
        output_pad: dict[str, int | float] | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queue_size < 1 or max_queue_delay_ms < 0:
            raise ValueError(
                "max_batch_size and max_queue_size must be ≥ 1 and max_queue_delay_ms ≥ 0, got "
                f"{max_batch_size}, {max_queue_size}, {max_queue_delay_ms} (e.g. 8, 256, 5.0)"
            )
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_queue_delay = max_queue_delay_ms / 1000
        self.max_queue_size = max_queue_size
        self.max_inflight = max_inflight  # None: no bound on admitted requests (only the queue's)
        self.inflight = 0  # requests inside `admitted`
        self.executor = executor  # None: the event loop's default thread pool
        self.on_batch = on_batch
        self.flush_when_idle = flush_when_idle
        self.inline = inline
        # Seconds one batch takes: seeded from the load-time measurement, then a moving average of real batches.
        self.batch_seconds = batch_seconds
        self.pad = dict(pad or {})  # inputs whose axis 1 is padded with this value to share a batch
        self.output_pad = dict(output_pad or {})  # outputs whose axis 1 varies per batch (decoded ids): joined padded
        self.rejected = 0  # QueueFull answers
        self.expired = 0  # DeadlineExceeded answers
        self._pending: deque[_Request] = deque()
        self._pending_rows = 0  # sum of rows in _pending: admission asks for it on every request
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._busy = False  # a batch is in the executor

    @property
    def queue_depth(self) -> int:
        """Requests waiting (not counting the batch being computed)."""
        return len(self._pending)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done() and not self._stopping

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("a Batcher is started once; create a new one to restart")
        self._task = asyncio.create_task(self._loop(), name="dlforge-batcher")

    async def stop(self, drain: bool = True) -> None:
        """Stop taking requests; finish the batch in flight and, with `drain`, the queued ones."""
        if self._task is None:
            return
        self._stopping = True
        if not drain:
            self._fail_pending(BatcherStopped("the server stopped before running this request"))
        self._wakeup.set()
        await self._task

    async def submit(self, inputs: Tensors, deadline: float | None = None) -> Tensors:
        """This request's rows of the model's outputs; `deadline` is a time.monotonic() value."""
        if not self.running:
            raise BatcherStopped("the model is not accepting requests (stopped or not started)")
        rows, key = _signature(inputs, self.pad)
        self.admit(rows, deadline)
        future: asyncio.Future[Tensors] = asyncio.get_running_loop().create_future()
        idle = not self._pending and not self._busy
        request = _Request(inputs, rows, key, deadline, time.monotonic(), future, idle)
        self._pending.append(request)
        self._pending_rows += rows
        if idle and self.inline and self.flush_when_idle and rows <= self.max_batch_size:
            await asyncio.sleep(0)  # let requests submitted in the same turn join
            if len(self._pending) == 1 and self._pending[0] is request and not self._busy:
                self._pending.popleft()
                self._pending_rows -= rows
                return self._run_inline(request)
        self._wakeup.set()
        return await future  # a cancelled caller cancels the future; the loop then skips it

    @contextlib.contextmanager
    def admitted(self, rows: int, deadline: float | None) -> Iterator[None]:
        """Hold one of the `max_inflight` places for a request, from before its body is read until it is answered.

        Raises QueueFull at once when every place is taken (or `admit` refuses): the client retries later."""
        if self.max_inflight is not None and self.inflight >= self.max_inflight:
            self.rejected += 1
            raise QueueFull(in_flight_message(self.max_inflight), reason="in_flight")
        self.admit(rows, deadline)
        self.inflight += 1
        try:
            yield
        finally:
            self.inflight -= 1

    def admit(self, rows: int, deadline: float | None) -> None:
        """Raise QueueFull unless a request of `rows` rows has a place and could finish by `deadline`.

        Also called before a request's body is read (rows=1), so overload is answered without reading it."""
        if deadline is not None and time.monotonic() >= deadline:
            self.expired += 1
            raise DeadlineExceeded("the request's deadline passed before it was queued")
        if len(self._pending) >= self.max_queue_size:
            self.rejected += 1
            raise QueueFull(f"the queue is full ({self.max_queue_size} requests); retry later", reason="queue")
        if deadline is not None and (wait := self.expected_wait(rows)) > deadline - time.monotonic():
            self.rejected += 1
            raise QueueFull(f"the server is overloaded: the work queued ahead (~{wait:.2f} s) would not finish "
                            "before the request's deadline; retry later", reason="deadline")

    def expected_wait(self, rows: int) -> float:
        """Seconds until a request of `rows` rows is answered: batches queued ahead, the one computing, its own."""
        ahead = self._pending_rows
        batches = math.ceil(ahead / self.max_batch_size) + int(self._busy) + math.ceil(rows / self.max_batch_size)
        return batches * self.batch_seconds

    def _run_inline(self, request: _Request) -> Tensors:
        """A lone request on an idle batcher, computed on the caller's task (see `inline`)."""
        started = time.monotonic()
        self._busy = True
        try:
            outputs = self._compute([request.inputs], [request.rows], None)[0]
        except Exception as exc:  # the model's failure belongs to this request only
            self._report([request], started, time.monotonic() - started, exc)
            raise
        finally:
            self._busy = False
        self._report([request], started, time.monotonic() - started, None)
        return outputs

    # --- the loop ---------------------------------------------------------------------------

    async def _loop(self) -> None:
        try:
            while (batch := await self._next_batch()) is not None:
                await self._run(batch)
        except BaseException:  # a bug or a cancellation must not leave callers waiting forever
            self._fail_pending(BatcherStopped("the batcher stopped unexpectedly"))
            raise

    async def _next_batch(self) -> list[_Request] | None:
        """Wait until a batch is due: full, the oldest request's delay is over, or stopping."""
        while True:
            while not self._pending:
                if self._stopping:
                    return None
                self._wakeup.clear()
                await self._wakeup.wait()
            oldest = self._pending[0]
            if self.flush_when_idle and oldest.idle and not self._stopping:
                await asyncio.sleep(0)  # let requests submitted in the same turn join
                if len(self._pending) == 1 and self._pending[0] is oldest:
                    if batch := self._take(oldest.key):
                        return batch
                    continue
            flush_at = oldest.enqueued + self.max_queue_delay
            while not self._stopping and self._ready_rows(oldest.key) < self.max_batch_size:
                if (remaining := flush_at - time.monotonic()) <= 0:
                    break
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):  # loop timers may fire a hair early
                    async with asyncio.timeout(remaining):
                        await self._wakeup.wait()
            if batch := self._take(oldest.key):
                return batch

    def _ready_rows(self, key: tuple) -> int:
        return sum(r.rows for r in self._pending if r.key == key and not r.future.done())

    def _take(self, key: tuple) -> list[_Request]:
        """Remove the next batch for `key` in arrival order; answer expired requests on the way."""
        now = time.monotonic()
        batch: list[_Request] = []
        rest: deque[_Request] = deque()
        rows, full = 0, False
        for r in self._pending:
            if r.future.done():  # the caller gave up
                continue
            if r.deadline is not None and now >= r.deadline:
                self.expired += 1
                r.future.set_exception(DeadlineExceeded("the deadline passed while queued"))
            elif r.key == key and not full and (not batch or rows + r.rows <= self.max_batch_size):
                batch.append(r)
                rows += r.rows
            else:
                full = full or r.key == key  # keep arrival order: nothing jumps a waiting peer
                rest.append(r)
        self._pending = rest
        self._pending_rows = sum(r.rows for r in rest)
        return batch

    async def _run(self, batch: list[_Request]) -> None:
        started = time.monotonic()
        error: Exception | None = None
        inputs, rows = [r.inputs for r in batch], [r.rows for r in batch]
        wanted = _still_wanted(batch[0]) if len(batch) == 1 else None
        self._busy = True
        try:
            if self.inline and sum(rows) <= self.max_batch_size:
                parts = self._compute(inputs, rows, wanted)
            else:
                parts = await asyncio.get_running_loop().run_in_executor(
                    self.executor, self._compute, inputs, rows, wanted)
        except asyncio.CancelledError:
            _fail(batch, BatcherStopped("the batcher was cancelled while running this request"))
            raise
        except Exception as exc:  # the model's failure belongs to this batch only
            error = exc
            _fail(batch, exc)
        else:
            for r, part in zip(batch, parts, strict=True):
                if not r.future.done():
                    r.future.set_result(part)
        finally:
            self._busy = False
        self._report(batch, started, time.monotonic() - started, error)

    def _compute(self, inputs: list[Tensors], rows: list[int], wanted: Callable[[], bool] | None) -> list[Tensors]:
        """Runs in the executor: concatenate, call the model, split by row counts.

        One request bigger than a batch runs in slices of `max_batch_size` rows; `wanted` is asked between
        slices, so an abandoned or expired request stops within one batch's time."""
        if len(inputs) == 1:
            if rows[0] > self.max_batch_size and wanted is not None:
                return [self._sliced(inputs[0], rows[0], wanted)]
            joined = inputs[0]
        else:
            joined = {name: _join([i[name] for i in inputs], self.pad.get(name)) for name in inputs[0]}
        outputs = self.run_batch(joined)
        return _split(outputs, rows)

    def _sliced(self, inputs: Tensors, rows: int, wanted: Callable[[], bool]) -> Tensors:
        parts: list[Tensors] = []
        for start in range(0, rows, self.max_batch_size):
            if not wanted():
                raise DeadlineExceeded("the request was abandoned or passed its deadline while computing")
            chunk = {name: a[start : start + self.max_batch_size] for name, a in inputs.items()}
            parts.append(self.run_batch(chunk))
        return {name: _join([p[name] for p in parts], self.output_pad.get(name)) for name in parts[0]}

    def _report(
        self, batch: list[_Request], started: float, seconds: float, error: Exception | None
    ) -> None:
        if error is None and batch:
            batches = max(1, math.ceil(sum(r.rows for r in batch) / self.max_batch_size))
            per_batch = seconds / batches
            self.batch_seconds = per_batch if not self.batch_seconds else 0.8 * self.batch_seconds + 0.2 * per_batch
        if self.on_batch is None:
            return
        stats = BatchStats(
            rows=sum(r.rows for r in batch),
            requests=len(batch),
            queue_times=tuple(started - r.enqueued for r in batch),
            compute_time=seconds,
            error=error,
            waiting=len(self._pending),
        )
        try:
            self.on_batch(stats)
        except Exception:  # metrics must never take the model down
            log.exception("on_batch callback failed")

    def _fail_pending(self, error: BatcherError) -> None:
        _fail(list(self._pending), error)
        self._pending.clear()
        self._pending_rows = 0


def in_flight_message(max_inflight: int) -> str:
    """What a request refused by the in-flight bound is told (the same words from the protocol's fast refusal)."""
    return (f"the server is at capacity ({max_inflight} requests in progress for this model); retry after the "
            "Retry-After seconds")


def _still_wanted(request: _Request) -> Callable[[], bool]:
    """Asked from the executor thread: is anyone still waiting for this request, within its deadline?"""
    future, deadline = request.future, request.deadline
    return lambda: not future.done() and (deadline is None or time.monotonic() < deadline)


def _fail(batch: list[_Request], error: BaseException) -> None:
    for r in batch:
        if not r.future.done():
            r.future.set_exception(error)


def _signature(inputs: Tensors, pad: dict[str, int | float] | None = None) -> tuple[int, tuple[Any, ...]]:
    """Row count (the shared leading dimension) and what must match to share a batch.

    Inputs in `pad` (e.g. token ids) may differ in length along axis 1: they are padded when joined."""
    if not inputs:
        raise ValueError("a request needs at least one input")
    for name, array in inputs.items():
        if array.ndim == 0:
            raise ValueError(f"input '{name}' is a scalar; batching needs a leading batch axis")
    rows = {name: array.shape[0] for name, array in inputs.items()}
    if len(set(rows.values())) > 1:
        raise ValueError(f"inputs disagree on the batch size (leading dimension): {rows}")
    pad = pad or {}
    key = tuple(sorted((n, ("padded", *a.shape[2:]) if n in pad else a.shape[1:], a.dtype.str)
                       for n, a in inputs.items()))
    return next(iter(rows.values())), key


def _join(arrays: list[np.ndarray], pad_value: float | None) -> np.ndarray:
    """Concatenate along axis 0, first padding axis 1 to the longest when `pad_value` is given."""
    if pad_value is None or len({a.shape[1] for a in arrays}) == 1:
        return np.concatenate(arrays)
    width = max(a.shape[1] for a in arrays)
    return np.concatenate([np.pad(a, [(0, 0), (0, width - a.shape[1])] + [(0, 0)] * (a.ndim - 2),
                                  constant_values=pad_value) for a in arrays])


def _split(outputs: Tensors, rows: list[int]) -> list[Tensors]:
    total = sum(rows)
    for name, out in outputs.items():
        if np.ndim(out) == 0 or len(out) != total:
            got = "a scalar" if np.ndim(out) == 0 else f"{len(out)} rows"
            raise RuntimeError(f"run_batch returned {got} for output '{name}', expected {total}")
    if len(rows) == 1:  # one request: nothing to split
        return [outputs]
    offsets = np.cumsum(rows)[:-1]
    pieces = {name: np.split(out, offsets) for name, out in outputs.items()}
    return [{name: pieces[name][i] for name in outputs} for i in range(len(rows))]
