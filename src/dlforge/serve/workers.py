"""`dlforge serve` without `--workers`: how many server processes, and engine threads in each, for these cores.

A request costs a server process some Python work whatever the model (HTTP, JSON, batching: about
HTTP_MS_PER_REQUEST of CPU, the `cpu ms/req` column of benchmarks/bench_serve.py for a tiny model) plus
the engine's time for its row. Python runs one thread at a time per process; the engine (ONNX Runtime)
spreads a batch over threads by itself. So the cores are split in that proportion: a model whose rows
cost little next to the HTTP work gets more processes (each one core of Python), a heavy one gets one
process whose engine uses every core. The engine's share is measured here, before the workers start,
at the batch size the server will use, for the lightest model in the repository (the one whose traffic
is most HTTP-bound).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from dlforge.cores import usable_cores
from dlforge.serve.policy import batch_size
from dlforge.serve.settings import Settings

log = logging.getLogger("dlforge.serve")
HTTP_MS_PER_REQUEST = 0.2  # CPU per one-row JSON request spent outside the engine (bench_serve.py, 2026-12)
MEASURE_ROWS = 8  # rows per timed call: enough to amortise a call's overhead, quick for heavy models


@dataclass(frozen=True)
class WorkerChoice:
    workers: int
    threads: int
    reason: str


def split_cores(cores: int, engine_ms_per_row: float) -> tuple[int, int]:
    """(processes, engine threads per process) for `cores` cores and a model costing this much per row."""
    http_share = HTTP_MS_PER_REQUEST / (HTTP_MS_PER_REQUEST + max(engine_ms_per_row, 0.0))
    workers = max(1, min(cores, round(cores * http_share)))
    return workers, max(1, cores // workers)


def choose_workers(settings: Settings, cores: int | None = None) -> WorkerChoice:
    """The choice for `settings` on `cores` cores (default: those this process may use), with its reason."""
    cores = cores or usable_cores()
    if cores == 1:
        return WorkerChoice(1, settings.intra_op_threads or 1, "1 core")
    if settings.admin_token is not None:  # load/unload reach one process: the repository API needs exactly one
        return WorkerChoice(1, settings.intra_op_threads or cores, "the repository API (--admin-token) needs one "
                            "process")
    lightest = _lightest_model(settings)
    if lightest is None:  # nothing loads: one process says why at start-up, as it would have anyway
        return WorkerChoice(1, settings.intra_op_threads or cores, "no model could be timed")
    name, ms_per_row = lightest
    workers, threads = split_cores(cores, ms_per_row)
    reason = (f"{cores} cores; {name} computes {ms_per_row:.3f} ms a row at batch {MEASURE_ROWS} against "
              f"~{HTTP_MS_PER_REQUEST} ms of HTTP work a request")
    return WorkerChoice(workers, settings.intra_op_threads or threads, reason)


def resolve_workers(settings: Settings) -> Settings:
    """`settings` with `workers` (and, unless given, the engine threads) chosen and the choice logged."""
    if settings.workers is not None:
        return settings
    choice = choose_workers(settings)
    log.info("workers: %d process(es) × %d engine thread(s) (automatic: %s; --workers/--threads override)",
             choice.workers, choice.threads, choice.reason)
    return settings.model_copy(update={"workers": choice.workers, "intra_op_threads": choice.threads})


def _lightest_model(settings: Settings) -> tuple[str, float] | None:
    """The model with the cheapest row among those served, timed on one engine thread (None: none loads).

    A package that fails to load is skipped here: the server itself reports it and serves the others."""
    from dlforge.export.package import load_package
    from dlforge.serve.repository import discover
    from dlforge.serve.runtime import batch_latency, load_runtime

    timings: dict[str, float] = {}
    for name, versions in discover(settings.path).items():
        if settings.models and name not in settings.models:
            continue
        for version, path in versions.items():
            try:
                package = load_package(path)
                rows = min(MEASURE_ROWS, batch_size(settings, package.manifest.serving))
                runtime = load_runtime(settings.runtime, package, 1)
                timings[f"{name} v{version}"] = batch_latency(runtime, rows, repeats=5, budget_s=0.5) * 1000 / rows
            except Exception as exc:  # any load failure: the server's own load reports it
                log.debug("not timed for the worker choice: %s v%s (%s)", name, version, exc)
    if not timings:
        return None
    name = min(timings, key=lambda n: timings[n])
    return name, timings[name]
