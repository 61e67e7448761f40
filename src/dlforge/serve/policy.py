"""Batching and admission settings for one model version, resolved once into a frozen object.

One precedence rule for every field: the command line (Settings) over the package manifest's
`serving` section (written by `dlforge export` from the experiment's `export.serving`) over a value
derived from the model's measured latency over the built-in default. The batcher, the admission
check and the load log line all read this object; nothing else holds a default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

MAX_BATCH_SIZE = 32  # rows per batch when nothing says otherwise
MAX_QUEUE_DELAY_MS = 5.0  # the delay never defaults above this, however slow one row is
MAX_QUEUE_CAP = 4096  # requests: a bound on memory held by waiting requests, whatever the latency
MAX_ROWS_CAP = 65_536  # rows one request may carry when nothing says otherwise
IN_FLIGHT_BATCHES = 2  # requests admitted per model: this many full batches' worth
REQUEST_TENSOR_BYTES = 64 << 20  # the default row cap keeps one request's decoded inputs under this


@dataclass(frozen=True)
class BatchPolicy:
    """What the batcher does for one model version, and where each value came from."""

    max_batch_size: int = MAX_BATCH_SIZE
    max_queue_delay_ms: float = MAX_QUEUE_DELAY_MS
    max_queue: int = 256  # requests waiting; more are answered 503 at once
    max_batch_rows: int = MAX_ROWS_CAP  # rows one request may carry (400 above)
    max_inflight: int = 2 * MAX_BATCH_SIZE  # requests admitted and not yet answered; more are answered 503 at once
    inline: bool = False  # batches run on the event loop (tiny models: cheaper than a thread hop)
    batch_seconds: float = 0.0  # measured latency of one full batch: seeds the admission estimate
    sources: tuple[tuple[str, str], ...] = ()  # (field, "cli" | "manifest" | "measured" | "default")

    def describe(self) -> str:
        where = dict(self.sources)
        parts = [f"max batch {self.max_batch_size} ({where.get('max_batch_size', 'default')})",
                 f"queue delay {self.max_queue_delay_ms:.3f} ms ({where.get('max_queue_delay_ms', 'default')})",
                 f"max queue {self.max_queue} ({where.get('max_queue', 'default')})",
                 f"max rows per request {self.max_batch_rows} ({where.get('max_batch_rows', 'default')})",
                 f"max in flight {self.max_inflight} ({where.get('max_inflight', 'default')})",
                 "batches run " + ("on the event loop" if self.inline else "on the inference threads")]
        return "; ".join(parts)


def _pick(name: str, cli: Any, manifest: Any, derived: Any, sources: list[tuple[str, str]],
          how: str = "measured") -> Any:
    """The one precedence rule: CLI, then manifest, then the value derived from measurements (or the default)."""
    for value, source in ((cli, "cli"), (manifest, "manifest")):
        if value is not None:
            sources.append((name, source))
            return value
    sources.append((name, how))
    return derived


def batch_size(settings: Any, serving: Any) -> int:
    """Max batch size alone (needed before the full batch can be timed): the same precedence rule."""
    return int(_pick("max_batch_size", settings.max_batch_size, getattr(serving, "max_batch_size", None),
                     MAX_BATCH_SIZE, [], "default"))


def resolve_policy(settings: Any, serving: Any, one_row_s: float, full_batch_s: float | None,
                   row_bytes: int) -> BatchPolicy:
    """The policy for one model from the server settings, the manifest's `serving` and measured latencies.

    `full_batch_s` is None when the full batch was not timed (one row already too slow to run inline);
    it is then estimated as max_batch_size × one row. `row_bytes` is one input row's decoded size."""
    sources: list[tuple[str, str]] = []
    batch = _pick("max_batch_size", settings.max_batch_size, getattr(serving, "max_batch_size", None),
                  MAX_BATCH_SIZE, sources, "default")
    # Waiting longer for company than one lone run takes cannot pay off: tiny models flush at once (as
    # Triton's default 0), heavy ones gather a batch for up to 5 ms.
    delay = _pick("max_queue_delay_ms", settings.max_queue_delay_ms, getattr(serving, "max_queue_delay_ms", None),
                  min(MAX_QUEUE_DELAY_MS, one_row_s * 1000), sources)
    batch_s = full_batch_s if full_batch_s is not None else one_row_s * batch
    # Enough waiting requests to keep the engine busy for the whole request deadline, no more: a request
    # behind them could not finish in time anyway.
    batches_in_deadline = math.ceil(settings.request_timeout_s / max(batch_s, 1e-6))
    queue = _pick("max_queue", settings.max_queue, None, min(MAX_QUEUE_CAP, max(2, batches_in_deadline) * batch),
                  sources)
    rows = _pick("max_batch_rows", settings.max_batch_rows, getattr(serving, "max_batch_rows", None),
                 max(batch, min(MAX_ROWS_CAP, REQUEST_TENSOR_BYTES // max(row_bytes, 1))), sources, "input size")
    # Requests admitted at once per process (from before the body is read until answered): two full batches, one
    # computing and one gathering, keep the engine busy; every request beyond them would only wait, and on a
    # small machine its reading and decoding would slow the admitted ones (at 512 clients, p99 went from 54 ms
    # to 3.9 s). Per process, not split over --workers: the kernel spreads connections unevenly.
    inflight = _pick("max_inflight", getattr(settings, "max_inflight", None), None, IN_FLIGHT_BATCHES * batch,
                     sources, "default")
    inline = full_batch_s is not None and full_batch_s * 1000 < settings.inline_max_ms
    return BatchPolicy(batch, float(delay), int(queue), int(rows), int(inflight), inline, batch_s, tuple(sources))
