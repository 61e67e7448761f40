"""`dlforge serve` without `--workers`: the automatic split of the cores between processes and engine threads."""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from dlforge.cores import usable_cores
from dlforge.serve.settings import Settings
from dlforge.serve.workers import HTTP_MS_PER_REQUEST, choose_workers, split_cores
from tests.serve_helpers import infer_body, serve_process

pytestmark = pytest.mark.serve


def test_cheap_rows_get_processes_and_expensive_rows_get_engine_threads() -> None:
    assert split_cores(1, 0.01) == (1, 1)
    assert split_cores(2, 0.025) == (2, 1)  # a tiny CNN: the HTTP side is the work
    assert split_cores(2, 5.0) == (1, 2)  # a ResNet-18 at 32x32: the engine is the work
    assert split_cores(8, HTTP_MS_PER_REQUEST) == (4, 2)  # half and half
    assert split_cores(16, 1000.0) == (1, 16)


def test_the_choice_for_a_real_package(model_package: Path) -> None:
    auto = Settings(path=model_package, workers=None)
    tiny = choose_workers(auto, cores=4)  # the test model computes a row in microseconds
    assert "tiny v1 computes" in tiny.reason
    # The split follows the measured cost (timing moves with the machine's load, so not an exact count) and
    # gives a model this cheap several processes: it would take ~0.33 ms a row to drop to one.
    assert (tiny.workers, tiny.threads) == split_cores(4, _logged_ms(tiny.reason)) and tiny.workers >= 2
    assert choose_workers(auto, cores=1).workers == 1
    pinned = choose_workers(auto.model_copy(update={"intra_op_threads": 3}), cores=4)
    assert pinned.threads == 3  # --threads is kept
    admin = choose_workers(auto.model_copy(update={"admin_token": "a"}), cores=4)
    assert (admin.workers, admin.threads) == (1, 4) and "repository API" in admin.reason


@pytest.mark.slow
def test_serve_without_workers_logs_its_choice_and_runs_it(model_package: Path, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with serve_process(model_package, "--workers", "auto", log=log) as (url, proc):
        x = np.zeros((1, 1, 8, 8), np.float32)
        assert httpx.post(f"{url}/v2/models/tiny/infer", json=infer_body(x), timeout=30).status_code == 200
        line = re.search(r"workers: (\d+) process\(es\) × (\d+) engine thread\(s\) \(automatic: (.*)\)",
                         log.read_text())
        assert line is not None, log.read_text()[-2000:]
        workers, threads = int(line[1]), int(line[2])
        assert (workers, threads) == split_cores(usable_cores(), _logged_ms(line[3]))
        # One process serves alone; with more, uvicorn's supervisor has that many worker children.
        children = [c for c in psutil.Process(proc.pid).children() if "resource_tracker" not in " ".join(c.cmdline())]
        assert (len(children) if workers > 1 else 1) == workers, [c.cmdline() for c in children]


def _logged_ms(reason: str) -> float:
    found = re.search(r"computes ([0-9.]+) ms a row", reason)
    assert found is not None, reason
    return float(found[1])


def test_a_container_cpu_limit_caps_the_cores() -> None:
    from dlforge.cores import cpu_quota

    assert cpu_quota("max 100000\n") is None
    assert cpu_quota("200000 100000\n") == 2.0
    assert cpu_quota("150000 100000") == 1.5  # usable_cores rounds a part core up
    assert cpu_quota("garbage") is None
    assert 1 <= usable_cores() <= (os.cpu_count() or 1)


def test_a_broken_package_is_skipped_by_the_choice(model_package: Path, tmp_path: Path) -> None:
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(model_package, repo / "tiny" / "1")
    shutil.copytree(model_package, repo / "broken" / "1")
    (repo / "broken" / "1" / "model.onnx").write_bytes(b"tampered")  # fails its sha256 check
    choice = choose_workers(Settings(path=repo, workers=None), cores=4)
    assert "tiny v1 computes" in choice.reason
    shutil.rmtree(repo / "tiny")
    alone = choose_workers(Settings(path=repo, workers=None), cores=4)
    assert (alone.workers, alone.reason) == (1, "no model could be timed")


@pytest.mark.parametrize(("value", "said"), [("abc", "a number of processes or auto"), ("0", "greater than or equal")])
def test_a_bad_workers_value_is_one_error_line(model_package: Path, value: str, said: str) -> None:
    from typer.testing import CliRunner

    from dlforge.cli import app

    result = CliRunner().invoke(app, ["serve", str(model_package), "--workers", value])
    assert result.exit_code == 2 and "--workers" in result.output and said in result.output
    assert "Traceback" not in result.output
