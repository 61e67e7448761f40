"""`dlforge tune`: search an experiment's `tune.space` on Optuna; cli.py registers it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dlforge.errors import UserError


def tune(
    config: Annotated[Path, typer.Argument(help="an experiment YAML with a `tune:` section")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="study folder (default `runs/<name>-tune`)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="override a key of every trial")] = None,
    trials: Annotated[int | None, typer.Option(help="override tune.trials")] = None,
    parallel: Annotated[int, typer.Option(help="trials at once on this machine (each its own process)")] = 1,
    storage: Annotated[str | None, typer.Option(
        help="override tune.storage: a SQLAlchemy URL that workers on several machines share")] = None,
) -> None:
    """Search hyperparameters: every trial is a run directory; the best config is written as YAML.

    Run it again on the same --out to continue a stopped study (a trial cut off mid-way continues from
    its last checkpoint). Example: `dlforge tune examples/digits_tune.yaml --parallel 2`
    """
    from dlforge.cores import usable_cores
    from dlforge.experiment import load_experiment
    from dlforge.taskapi import get_task
    from dlforge.tune.report import write_report
    from dlforge.tune.space import check_space
    from dlforge.tune.study import StudySpec, require_optuna, run_study

    require_optuna()
    if parallel < 1:
        raise UserError(f"--parallel must be at least 1, got {parallel}")
    cfg = load_experiment(config, set_)
    if cfg.tune is None:
        raise UserError(f"{config} has no `tune:` section; add one with a `space:` (see docs/tuning.md)")
    updates = {k: v for k, v in (("trials", trials), ("storage", storage)) if v is not None}
    if trials is not None and trials < 1:
        raise UserError(f"--trials must be at least 1, got {trials}")
    settings = cfg.tune.model_copy(update=updates)
    task = get_task(cfg.task)
    metric = settings.metric or cfg.train.monitor or task.default_monitor
    check_space(config, list(set_ or []), settings, ["val_loss", *(f"val_{m}" for m in task.metrics)])
    minimize = settings.mode == "min" if settings.mode else task.minimize(metric)
    threads = None if cfg.train.threads is not None else max(1, usable_cores() // parallel)
    spec = StudySpec(config=config, base=list(set_ or []), out=out or Path("runs") / f"{cfg.name}-tune",
                     tune=settings, metric=metric, minimize=minimize, seed=cfg.seed, threads=threads)
    study = run_study(spec, parallel)
    write_report(study, spec)
