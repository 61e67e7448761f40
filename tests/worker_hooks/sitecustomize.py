"""Fault injection for the distributed tests, kept out of the product (#18 item 11).

tests/test_dist.py puts this folder on PYTHONPATH of the `dlforge train` job it launches, so Python
imports this file at start-up in the launcher and in every torchrun worker. Only when a test sets one
of the variables below does it wrap `fit` in dlforge.train.run; the real training code runs unchanged.

- DLFORGE_TEST_PID_DIR: each worker writes `rank-<r>.pid` there before training (a test kills one).
- DLFORGE_TEST_FAIL_RANK: that rank raises a data error once its trainer is set up.
- DLFORGE_TEST_KILL_AT_STEP: every worker SIGKILLs itself once the mid-epoch checkpoint of that optimizer
  step is written (train.checkpoint_every_steps), as a machine that dies mid-epoch would.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

PID_DIR_ENV, FAIL_RANK_ENV = "DLFORGE_TEST_PID_DIR", "DLFORGE_TEST_FAIL_RANK"
KILL_AT_STEP_ENV = "DLFORGE_TEST_KILL_AT_STEP"


def _install() -> None:
    import dlforge.train.run as run
    from dlforge.data.datasets import DataError

    real_fit = run.fit

    def fit(tr: Any, run_dir: Path, resume: bool = False) -> Any:
        rank = tr.ctx.rank
        if folder := os.environ.get(PID_DIR_ENV):
            Path(folder).mkdir(parents=True, exist_ok=True)
            (Path(folder) / f"rank-{rank}.pid").write_text(str(os.getpid()))
        if os.environ.get(FAIL_RANK_ENV) == str(rank):
            raise DataError(f"injected failure on rank {rank} ({FAIL_RANK_ENV})")
        return real_fit(tr, run_dir, resume)

    run.fit = fit


def _install_kill() -> None:
    import signal

    import dlforge.train.loop as loop

    real_save = loop.save_inside_epoch
    kill_at = int(os.environ[KILL_AT_STEP_ENV])

    def save_inside_epoch(tr: Any, state: Any, run_dir: Path, sums: Any) -> None:
        real_save(tr, state, run_dir, sums)
        if state.step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    loop.save_inside_epoch = save_inside_epoch


if os.environ.get(PID_DIR_ENV) or os.environ.get(FAIL_RANK_ENV):
    _install()
if os.environ.get(KILL_AT_STEP_ENV):
    _install_kill()
