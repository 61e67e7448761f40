"""The dynamic batcher: size or delay flushes, per-batch errors, back-pressure, deadlines, stop.

Deterministic by construction: a huge delay forces size flushes, a zero delay forces immediate
ones, and a threading.Event holds a batch in the model so the queue state is known.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dlforge.serve.batcher import (
    Batcher,
    BatcherStopped,
    BatchStats,
    DeadlineExceeded,
    QueueFull,
    Tensors,
)

HUGE = 1e6  # ms: never reached, so only a full batch (or stop) flushes


class Model:
    """A fake model that records each batch; optionally fails, or blocks until released."""

    def __init__(self, fail_calls: set[int] | None = None, gated: bool = False) -> None:
        self.calls: list[Tensors] = []
        self.threads: list[str] = []
        self.fail_calls = fail_calls or set()
        self.gate = threading.Event()
        self.started = threading.Event()
        if not gated:
            self.gate.set()

    def __call__(self, batch: Tensors) -> Tensors:
        self.calls.append({k: v.copy() for k, v in batch.items()})
        self.threads.append(threading.current_thread().name)
        self.started.set()
        assert self.gate.wait(5), "test never released the model"
        if len(self.calls) - 1 in self.fail_calls:
            raise ValueError(f"boom in call {len(self.calls) - 1}")
        return {"y": batch["x"] * 2, "rows": np.full(len(batch["x"]), len(batch["x"]))}

    async def wait_started(self) -> None:
        assert await asyncio.to_thread(self.started.wait, 5)
        self.started.clear()


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 10))


@contextlib.asynccontextmanager
async def started(model: Model, **kwargs: Any) -> AsyncIterator[Batcher]:
    batcher = Batcher(model, **kwargs)
    await batcher.start()
    try:
        yield batcher
    finally:
        model.gate.set()
        await batcher.stop()


def row(value: float, n: int = 1, width: int = 2) -> Tensors:
    return {"x": np.full((n, width), value, dtype=np.float32)}


async def settle() -> None:
    """Let every task that is ready run up to its next real wait."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_huge_delay_flushes_by_size_and_results_go_to_their_caller() -> None:
    model, stats = Model(), []

    async def main() -> list[Tensors]:
        async with started(
            model, max_batch_size=4, max_queue_delay_ms=HUGE, on_batch=stats.append
        ) as b:
            return await asyncio.gather(*(b.submit(row(i)) for i in range(8)))

    results = run(main())
    assert [len(c["x"]) for c in model.calls] == [4, 4]
    assert [s.rows for s in stats] == [4, 4] and [s.requests for s in stats] == [4, 4]
    for i, out in enumerate(results):
        np.testing.assert_array_equal(out["y"], np.full((1, 2), 2 * i, np.float32))
        assert out["rows"].tolist() == [4]


def test_zero_delay_flushes_immediately() -> None:
    model = Model()

    async def main() -> None:
        async with started(model, max_batch_size=100, max_queue_delay_ms=0) as b:
            for i in range(3):
                out = await b.submit(row(i))
                assert out["y"][0, 0] == 2 * i

    run(main())
    assert [len(c["x"]) for c in model.calls] == [1, 1, 1]


def test_partial_batch_flushes_after_the_delay() -> None:
    model, stats = Model(), []

    async def main() -> float:
        async with started(
            model, max_batch_size=100, max_queue_delay_ms=50, on_batch=stats.append
        ) as b:
            begin = time.monotonic()
            await asyncio.gather(b.submit(row(1)), b.submit(row(2)))
            return time.monotonic() - begin

    assert run(main()) >= 0.05
    assert [len(c["x"]) for c in model.calls] == [2]
    assert min(stats[0].queue_times) >= 0.05 and stats[0].compute_time >= 0


def test_a_lone_request_to_an_idle_batcher_runs_without_waiting_the_delay() -> None:
    model, stats = Model(), []

    async def main() -> None:
        async with started(model, max_batch_size=8, max_queue_delay_ms=HUGE, on_batch=stats.append) as b:
            for i in range(3):  # concurrency 1: each request is alone when it arrives
                assert (await b.submit(row(i)))["y"][0, 0] == 2 * i

    run(main())  # a HUGE wait would trip run()'s 10 s timeout
    assert [len(c["x"]) for c in model.calls] == [1, 1, 1]
    assert all(s.queue_times[0] < 1 for s in stats)


def test_idle_flush_can_be_turned_off() -> None:
    model = Model()

    async def main() -> float:
        async with started(model, max_batch_size=8, max_queue_delay_ms=50, flush_when_idle=False) as b:
            begin = time.monotonic()
            await b.submit(row(1))
            return time.monotonic() - begin

    assert run(main()) >= 0.05


def test_requests_arriving_while_a_batch_computes_wait_for_company() -> None:
    model = Model(gated=True)

    async def main() -> None:
        async with started(model, max_batch_size=3, max_queue_delay_ms=HUGE) as b:
            first = asyncio.create_task(b.submit(row(0)))
            await model.wait_started()  # idle flush: it runs alone, at once
            second = asyncio.create_task(b.submit(row(1)))
            await settle()
            model.gate.set()
            assert (await first)["y"][0, 0] == 0
            await asyncio.sleep(0.05)
            assert len(model.calls) == 1 and b.queue_depth == 1  # not idle: waits for the batch to fill
            rest = [asyncio.create_task(b.submit(row(i))) for i in (2, 3)]
            outs = await asyncio.gather(second, *rest)
            assert [o["y"][0, 0] for o in outs] == [2, 4, 6]

    run(main())
    assert [len(c["x"]) for c in model.calls] == [1, 3]


def test_rows_of_multi_row_requests_are_split_back_in_order() -> None:
    model = Model()

    async def main() -> list[Tensors]:
        async with started(model, max_batch_size=6, max_queue_delay_ms=HUGE) as b:
            requests = [
                {"x": np.arange(n * 2, dtype=np.float32).reshape(n, 2) + 10 * n} for n in (1, 2, 3)
            ]
            return await asyncio.gather(*(b.submit(r) for r in requests))

    results = run(main())
    assert len(model.calls) == 1 and model.calls[0]["x"].shape == (6, 2)
    for n, out in zip((1, 2, 3), results, strict=True):
        want = (np.arange(n * 2, dtype=np.float32).reshape(n, 2) + 10 * n) * 2
        np.testing.assert_array_equal(out["y"], want)
        assert out["rows"].tolist() == [6] * n


def test_a_failing_batch_fails_only_its_own_requests() -> None:
    model, stats = Model(fail_calls={0}), []

    async def main() -> list[Any]:
        async with started(
            model, max_batch_size=4, max_queue_delay_ms=HUGE, on_batch=stats.append
        ) as b:
            first = await asyncio.gather(
                *(b.submit(row(i)) for i in range(8)), return_exceptions=True
            )
            b.max_queue_delay = 0
            after = await b.submit(row(9))  # the loop survived
            return [*first, after]

    results = run(main())
    assert all(isinstance(r, ValueError) and "boom in call 0" in str(r) for r in results[:4])
    assert [r["y"][0, 0] for r in results[4:8]] == [8, 10, 12, 14]
    assert results[8]["y"][0, 0] == 18
    assert isinstance(stats[0].error, ValueError) and stats[1].error is None


def test_wrong_output_rows_fail_the_batch() -> None:
    async def main() -> None:
        b = Batcher(lambda batch: {"y": np.zeros(1)}, max_batch_size=2, max_queue_delay_ms=HUGE)
        await b.start()
        results = await asyncio.gather(b.submit(row(1)), b.submit(row(2)), return_exceptions=True)
        await b.stop()
        assert all("returned 1 rows for output 'y', expected 2" in str(r) for r in results)

    run(main())


def test_queue_full_raises_immediately() -> None:
    model = Model(gated=True)

    async def main() -> None:
        async with started(model, max_batch_size=4, max_queue_delay_ms=0, max_queue_size=2) as b:
            running = asyncio.create_task(b.submit(row(0)))
            await model.wait_started()  # request 0 is in the model, the queue is empty
            queued = [asyncio.create_task(b.submit(row(i))) for i in (1, 2)]
            await settle()
            assert b.queue_depth == 2
            with pytest.raises(QueueFull, match="queue is full"):
                await b.submit(row(3))
            assert b.rejected == 1
            model.gate.set()
            outs = await asyncio.gather(running, *queued)
            assert [o["y"][0, 0] for o in outs] == [0, 2, 4]

    run(main())
    assert [len(c["x"]) for c in model.calls] == [1, 2]


def test_expired_requests_fail_without_being_computed() -> None:
    model = Model(gated=True)

    async def main() -> None:
        async with started(model, max_batch_size=4, max_queue_delay_ms=0) as b:
            with pytest.raises(DeadlineExceeded):
                await b.submit(row(1), deadline=time.monotonic() - 1)
            running = asyncio.create_task(b.submit(row(0)))
            await model.wait_started()
            late = asyncio.create_task(b.submit(row(5), deadline=time.monotonic() + 0.02))
            fine = asyncio.create_task(b.submit(row(7), deadline=time.monotonic() + 60))
            await asyncio.sleep(0.05)
            model.gate.set()
            assert (await running)["y"][0, 0] == 0
            with pytest.raises(DeadlineExceeded):
                await late
            assert (await fine)["y"][0, 0] == 14
            assert b.expired == 2

    run(main())
    assert [c["x"][:, 0].tolist() for c in model.calls] == [[0], [7]]


def test_cancelled_callers_are_not_computed() -> None:
    model = Model(gated=True)

    async def main() -> None:
        async with started(model, max_batch_size=4, max_queue_delay_ms=0) as b:
            running = asyncio.create_task(b.submit(row(0)))
            await model.wait_started()
            gone = asyncio.create_task(b.submit(row(5)))
            kept = asyncio.create_task(b.submit(row(6)))
            await settle()
            gone.cancel()
            model.gate.set()
            await asyncio.gather(running, kept)

    run(main())
    assert [c["x"][:, 0].tolist() for c in model.calls] == [[0], [6]]


def test_mixed_trailing_shapes_and_dtypes_are_not_concatenated() -> None:
    model = Model()

    async def main() -> list[Tensors]:
        async with started(model, max_batch_size=8, max_queue_delay_ms=20) as b:
            requests = [row(1, width=3), row(2, n=2, width=5), row(3, width=3), row(4, width=5)]
            requests.append({"x": np.ones((1, 3), dtype=np.float64)})
            return await asyncio.gather(*(b.submit(r) for r in requests))

    results = run(main())
    assert [(c["x"].shape, c["x"].dtype.name) for c in model.calls] == [
        ((2, 3), "float32"),
        ((3, 5), "float32"),
        ((1, 3), "float64"),
    ]
    assert [r["y"].shape for r in results] == [(1, 3), (2, 5), (1, 3), (1, 5), (1, 3)]
    assert results[1]["y"][0, 0] == 4 and results[2]["y"][0, 0] == 6


def test_stop_with_drain_completes_queued_requests() -> None:
    model = Model()

    async def main() -> None:
        b = Batcher(model, max_batch_size=100, max_queue_delay_ms=HUGE)
        await b.start()
        tasks = [asyncio.create_task(b.submit(row(i))) for i in range(3)]
        await settle()
        await b.stop(drain=True)
        assert [(await t)["y"][0, 0] for t in tasks] == [0, 2, 4]
        with pytest.raises(BatcherStopped):
            await b.submit(row(9))
        assert not [t for t in asyncio.all_tasks() if t.get_name() == "dlforge-batcher"]

    run(main())
    assert [len(c["x"]) for c in model.calls] == [3]


def test_stop_without_drain_fails_queued_but_finishes_in_flight() -> None:
    model = Model(gated=True)

    async def main() -> None:
        b = Batcher(model, max_batch_size=4, max_queue_delay_ms=0)
        await b.start()
        running = asyncio.create_task(b.submit(row(0)))
        await model.wait_started()
        queued = asyncio.create_task(b.submit(row(1)))
        await settle()
        stopping = asyncio.create_task(b.stop(drain=False))
        await settle()
        model.gate.set()
        await stopping
        assert (await running)["y"][0, 0] == 0
        with pytest.raises(BatcherStopped, match="stopped before running"):
            await queued

    run(main())
    assert len(model.calls) == 1


def test_runs_in_the_given_executor_off_the_event_loop() -> None:
    model = Model()

    async def main() -> None:
        with ThreadPoolExecutor(1, thread_name_prefix="model") as pool:
            async with started(model, max_queue_delay_ms=0, executor=pool) as b:
                await b.submit(row(1))

    run(main())
    assert model.threads[0].startswith("model")


def test_inline_runs_lone_requests_and_batches_on_the_event_loop_thread() -> None:
    model, stats = Model(), []

    async def main() -> None:
        with ThreadPoolExecutor(1, thread_name_prefix="model") as pool:
            async with started(model, max_batch_size=2, max_queue_delay_ms=HUGE, executor=pool, inline=True,
                               on_batch=stats.append) as b:
                assert (await b.submit(row(1)))["y"][0, 0] == 2  # alone on an idle batcher: straight from submit
                outs = await asyncio.gather(b.submit(row(2)), b.submit(row(3)))  # together: still one batch
                assert [o["y"][0, 0] for o in outs] == [4, 6]

    run(main())
    assert model.threads == [threading.main_thread().name] * 2  # the executor was never used
    assert [len(c["x"]) for c in model.calls] == [1, 2] and [s.rows for s in stats] == [1, 2]


def test_an_inline_failure_fails_only_its_request() -> None:
    model = Model(fail_calls={0})

    async def main() -> None:
        async with started(model, max_queue_delay_ms=HUGE, inline=True) as b:
            with pytest.raises(ValueError, match="boom in call 0"):
                await b.submit(row(1))
            assert (await b.submit(row(2)))["y"][0, 0] == 4 and b.running

    run(main())


def test_on_batch_errors_are_logged_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    def broken(stats: BatchStats) -> None:
        raise RuntimeError("metrics down")

    async def main() -> Tensors:
        async with started(Model(), max_queue_delay_ms=0, on_batch=broken) as b:
            return await b.submit(row(3))

    with caplog.at_level(logging.ERROR, logger="dlforge.serve.batcher"):
        assert run(main())["y"][0, 0] == 6
    assert "on_batch callback failed" in caplog.text


def test_refusals_of_malformed_requests_and_settings() -> None:
    async def main() -> None:
        b = Batcher(Model(), max_queue_delay_ms=0)
        with pytest.raises(BatcherStopped, match="not accepting"):
            await b.submit(row(1))
        await b.start()
        with pytest.raises(ValueError, match="scalar"):
            await b.submit({"x": np.float32(1.0) * np.ones(())})
        with pytest.raises(ValueError, match="disagree on the batch size"):
            await b.submit({"x": np.zeros((2, 1)), "m": np.zeros((3,))})
        with pytest.raises(ValueError, match="at least one input"):
            await b.submit({})
        with pytest.raises(RuntimeError, match="started once"):
            await b.start()
        await b.stop()

    run(main())
    with pytest.raises(ValueError, match="max_batch_size"):
        Batcher(Model(), max_batch_size=0)


def test_batcher_imports_no_torch_and_no_web_framework() -> None:
    code = (
        "import sys, dlforge.serve.batcher\n"
        "heavy = {'torch', 'fastapi', 'starlette', 'pydantic'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


def test_admission_refuses_at_once_when_the_work_ahead_cannot_meet_the_deadline() -> None:
    async def scenario() -> None:
        model = Model(gated=True)
        async with started(model, max_batch_size=4, max_queue_delay_ms=0, batch_seconds=1.0) as b:
            busy = asyncio.create_task(b.submit(row(1.0)))  # computing: one batch (1 s) ahead of the next
            await model.wait_started()
            with pytest.raises(QueueFull, match="overloaded"):
                await b.submit(row(2.0), deadline=time.monotonic() + 1.5)  # needs ~2 s: refused, not queued
            assert b.queue_depth == 0 and b.rejected == 1
            waiting = asyncio.create_task(b.submit(row(3.0), deadline=time.monotonic() + 60))  # fits: queued
            await settle()
            assert b.queue_depth == 1
            model.gate.set()
            assert (await waiting)["y"][0, 0] == 6.0 and (await busy)["y"][0, 0] == 2.0
        assert len(model.calls) == 2

    run(scenario())


def test_a_request_bigger_than_a_batch_runs_in_slices_and_stops_when_nobody_waits() -> None:
    async def scenario() -> None:
        model = Model()
        with ThreadPoolExecutor(1) as pool:
            async with started(model, max_batch_size=4, max_queue_delay_ms=0, executor=pool) as b:
                x = {"x": np.arange(20, dtype=np.float32).reshape(10, 2)}
                out = await b.submit(x)
                assert [len(c["x"]) for c in model.calls] == [4, 4, 2]
                np.testing.assert_array_equal(out["y"], x["x"] * 2)
                slow = Model(gated=True)
                b.run_batch = slow
                big = asyncio.create_task(b.submit({"x": np.zeros((40, 2), np.float32)}))
                await slow.wait_started()
                big.cancel()  # the caller leaves while the first slice computes
                await settle()
                slow.gate.set()
                with contextlib.suppress(asyncio.CancelledError):
                    await big
                await asyncio.to_thread(pool.submit(lambda: None).result)  # the executor is free again
                assert len(slow.calls) == 1  # the other 9 slices never ran

    run(scenario())


def test_slices_whose_outputs_differ_in_length_are_joined_padded() -> None:
    """#29: a decoder's output width is its batch's longest result, so the slices of one big request differ
    along axis 1; outputs named in `output_pad` are padded to the longest, the rest must agree."""

    def decode(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        lengths = batch["x"][:, 0].astype(int)  # row i "decodes" to lengths[i] tokens of value 7
        ids = np.zeros((len(lengths), max(lengths)), np.int64)
        for i, n in enumerate(lengths):
            ids[i, :n] = 7
        return {"ids": ids}

    async def submit(x: Tensors, **kwargs: Any) -> Tensors:
        batcher = Batcher(decode, max_batch_size=2, max_queue_delay_ms=0, **kwargs)
        await batcher.start()
        try:
            return await batcher.submit(x)
        finally:
            await batcher.stop()

    async def scenario() -> None:
        x = {"x": np.array([[1], [5], [2], [1], [3]], np.float32)}
        out = (await submit(x, output_pad={"ids": 0}))["ids"]
        assert out.shape == (5, 5) and (out == 7).sum(axis=1).tolist() == [1, 5, 2, 1, 3]
        with pytest.raises(ValueError, match="dimension 1"):  # nothing to pad with: an honest error
            await submit(x)

    run(scenario())


def test_admitted_holds_a_place_until_answered_and_refuses_beyond_max_inflight() -> None:
    async def scenario() -> None:
        model = Model(gated=True)
        async with started(model, max_batch_size=4, max_queue_delay_ms=0, max_inflight=2) as b:

            async def call(value: float) -> Tensors:
                with b.admitted(1, time.monotonic() + 60):
                    return await b.submit(row(value))

            first, second = asyncio.create_task(call(1.0)), asyncio.create_task(call(2.0))
            await model.wait_started()
            assert b.inflight == 2
            with pytest.raises(QueueFull, match="at capacity") as refused, b.admitted(1, None):
                pass
            assert refused.value.reason == "in_flight" and b.rejected == 1
            model.gate.set()
            await first, await second
            assert b.inflight == 0
            with b.admitted(1, None):  # places come back when requests are answered, failed ones included
                assert b.inflight == 1
            with pytest.raises(ValueError), b.admitted(1, None):
                raise ValueError("a bad request")
            assert b.inflight == 0

    run(scenario())
