"""The cores a process may use and the training threads taken from them (dlforge.cores)."""

from __future__ import annotations

import os

import pytest

from dlforge.cores import LOCAL_WORLD_SIZE, cpu_quota, training_threads, usable_cores


def test_a_cgroup_quota_reads_as_cores_and_max_as_no_limit() -> None:
    assert cpu_quota("200000 100000") == 2.0 and cpu_quota("50000 100000") == 0.5
    assert cpu_quota("max 100000") is None and cpu_quota("garbage") is None


def test_usable_cores_never_exceed_the_affinity_mask() -> None:
    mask = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    assert 1 <= usable_cores() <= mask


@pytest.mark.parametrize("workers", ["1", "2", "64"])
def test_training_threads_are_this_workers_share_of_the_cores(monkeypatch: pytest.MonkeyPatch, workers: str) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv(LOCAL_WORLD_SIZE, workers)
    assert training_threads() == max(1, usable_cores() // int(workers))


def test_omp_num_threads_wins_as_it_does_for_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setenv(LOCAL_WORLD_SIZE, "2")
    assert training_threads() == 3
