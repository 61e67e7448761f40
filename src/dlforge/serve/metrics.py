"""Prometheus metrics for one app: per process, or merged over the `--workers N` processes.

Request counts and latency are observed per route call; queue time, compute time and batch size
come from the batcher's `on_batch` callback. Queue depth and models loaded are gauges this process
writes at scrape time and, for queue depth, after each batch.

One process keeps its metrics in the app's own CollectorRegistry (so tests can run several apps).
With workers (`multiprocess`), prometheus_client's multiprocess mode is on: the server points
PROMETHEUS_MULTIPROC_DIR at a fresh directory before the workers start, each worker writes its
values to files there, and a scrape merges every worker's files, whichever worker answers it.
That is why the gauges are written rather than computed at scrape time (a custom collector would
see only the answering worker): queue depth sums the live workers, models loaded is their minimum.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from dlforge.serve.batcher import Batcher, BatchStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServeMetrics:
    """The server's Prometheus objects; `queues` gives this process's batchers per model version."""

    def __init__(self, queues: Callable[[], dict[tuple[str, str], Batcher]], multiprocess: bool = False) -> None:
        self.queues = queues
        self.multiprocess = multiprocess
        self.registry = CollectorRegistry()
        if multiprocess:
            MultiProcessCollector(self.registry)
        # With workers the values live in the files the collector reads: registering the metrics too would
        # report this worker's values twice.
        r = None if multiprocess else self.registry
        labels = ("model", "version")
        self.requests = Counter("dlforge_requests", "Inference requests by outcome", (*labels, "status"), registry=r)
        self.latency = Histogram("dlforge_request_seconds", "Inference latency", labels, buckets=_LATENCY, registry=r)
        self.queue_time = Histogram("dlforge_queue_seconds", "Time queued before a batch", labels,
                                    buckets=_LATENCY, registry=r)
        self.compute_time = Histogram("dlforge_compute_seconds", "Batch compute time", labels,
                                      buckets=_LATENCY, registry=r)
        self.batch_size = Histogram("dlforge_batch_size", "Rows per batch", labels, buckets=_BATCH, registry=r)
        # Every refusal for load, whichever bound answered it (HTTP 503 / gRPC RESOURCE_EXHAUSTED): in_flight,
        # queue, deadline (batcher.py), connections (http.py); also counted by status in dlforge_requests when
        # the model is known.
        self.shed = Counter("dlforge_shed", "Requests refused for load", ("protocol", "reason"), registry=r)
        self.queue_depth = Gauge("dlforge_queue_depth", "Requests waiting in the batcher", labels,
                                 multiprocess_mode="livesum", registry=r)
        self.models_loaded = Gauge("dlforge_models_loaded", "Model versions loaded and ready",
                                   multiprocess_mode="livemin", registry=r)
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}  # bounded: models × statuses
        self._depths: dict[tuple[str, str], Any] = {}  # every version ever loaded

    def on_batch(self, model: str, version: str) -> Callable[[BatchStats], None]:
        """The batcher callback for one model version (children bound once: `labels()` is not free)."""
        batch_size = self.batch_size.labels(model, version)
        compute_time = self.compute_time.labels(model, version)
        queue_time = self.queue_time.labels(model, version)
        depth = self._depths[model, version] = self.queue_depth.labels(model, version)

        def observe(stats: BatchStats) -> None:
            batch_size.observe(stats.rows)
            compute_time.observe(stats.compute_time)
            for waited in stats.queue_times:
                queue_time.observe(waited)
            depth.set(stats.waiting)  # so another worker's scrape sees this one's backlog

        return observe

    def observe_request(self, model: str, version: str, status: int, seconds: float) -> None:
        key = (model, version, status)
        if (children := self._children.get(key)) is None:
            children = self._children[key] = (self.requests.labels(model, version, str(status)),
                                              self.latency.labels(model, version))
        children[0].inc()
        children[1].observe(seconds)

    def refresh(self) -> None:
        """Write this process's models loaded and queue depths (0 for versions since unloaded)."""
        queues = self.queues()
        self.models_loaded.set(len(queues))
        for key, depth in self._depths.items():
            depth.set(queues[key].queue_depth if key in queues else 0)

    def render(self) -> bytes:
        self.refresh()
        return generate_latest(self.registry)

    def close(self) -> None:
        """At process exit: with workers, take this one's queue depth and models loaded out of the merge."""
        if self.multiprocess:
            mark_process_dead(os.getpid())
