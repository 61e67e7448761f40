"""Prometheus metrics for one app, in its own CollectorRegistry (so tests can run several apps).

Request counts and latency are observed per route call; queue time, compute time and batch size
come from the batcher's `on_batch` callback; queue depth is read at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from dlforge.serve.batcher import Batcher, BatchStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServeMetrics:
    """The server's Prometheus objects; `queues` reports live queue depth per model version."""

    def __init__(self, queues: Callable[[], dict[tuple[str, str], Batcher]]) -> None:
        self.registry = CollectorRegistry()
        labels = ("model", "version")
        r = self.registry
        self.requests = Counter("dlforge_requests", "Inference requests by outcome", (*labels, "status"), registry=r)
        self.latency = Histogram("dlforge_request_seconds", "Inference latency", labels, buckets=_LATENCY, registry=r)
        self.queue_time = Histogram("dlforge_queue_seconds", "Time queued before a batch", labels,
                                    buckets=_LATENCY, registry=r)
        self.compute_time = Histogram("dlforge_compute_seconds", "Batch compute time", labels,
                                      buckets=_LATENCY, registry=r)
        self.batch_size = Histogram("dlforge_batch_size", "Rows per batch", labels, buckets=_BATCH, registry=r)
        self.models_loaded = Gauge("dlforge_models_loaded", "Model versions loaded and ready", registry=r)
        r.register(_QueueDepth(queues))
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}  # bounded: models × statuses

    def on_batch(self, model: str, version: str) -> Callable[[BatchStats], None]:
        """The batcher callback for one model version (children bound once: `labels()` is not free)."""
        batch_size = self.batch_size.labels(model, version)
        compute_time = self.compute_time.labels(model, version)
        queue_time = self.queue_time.labels(model, version)

        def observe(stats: BatchStats) -> None:
            batch_size.observe(stats.rows)
            compute_time.observe(stats.compute_time)
            for waited in stats.queue_times:
                queue_time.observe(waited)

        return observe

    def observe_request(self, model: str, version: str, status: int, seconds: float) -> None:
        key = (model, version, status)
        if (children := self._children.get(key)) is None:
            children = self._children[key] = (self.requests.labels(model, version, str(status)),
                                              self.latency.labels(model, version))
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _QueueDepth:
    """A collector, so the gauge is always the batcher's current value (no bookkeeping)."""

    def __init__(self, queues: Callable[[], dict[tuple[str, str], Batcher]]) -> None:
        self.queues = queues

    def collect(self) -> list[GaugeMetricFamily]:
        family = GaugeMetricFamily("dlforge_queue_depth", "Requests waiting in the batcher",
                                   labels=["model", "version"])
        for (model, version), batcher in self.queues().items():
            family.add_metric([model, version], batcher.queue_depth)
        return [family]

    def describe(self) -> list[GaugeMetricFamily]:
        return []
