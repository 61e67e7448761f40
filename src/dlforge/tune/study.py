"""A study on Optuna: its storage, sampler and pruner, and the worker processes that run its trials.

Every trial is an ordinary run directory (`<out>/trial-NNNN`, trained by `train_run` as `dlforge train`
would, so its package can be served); its per-epoch validation metric goes to Optuna, whose pruner may
stop it. Trials are claimed under a file lock (count, then ask), so a study makes exactly `tune.trials`
trials however many workers race. A study killed mid-trial leaves that trial RUNNING: the next
`dlforge tune` on the same folder (a new *session*) continues it from its last checkpoint, with the
same values, before it starts new ones — no trial is lost or made twice.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlforge.config.tune import TuneConfig
from dlforge.console import console
from dlforge.errors import UserError
from dlforge.processes import die_with_parent

if TYPE_CHECKING:
    import optuna

STUDY_DB, CLAIM_LOCK, SESSION_LOCK = "study.db", "claim.lock", "tune.lock"
INSTALL = "pip install 'dlforge[tune]'"


class TuneError(UserError):
    """The study cannot run as asked (optuna missing, the folder in use, …)."""


@dataclass(frozen=True)
class StudySpec:
    """What every worker needs to rebuild the study and a trial's experiment (picklable)."""

    config: Path | None  # the experiment file
    base: list[str]  # the command line's --set overrides, applied before a trial's values
    out: Path  # the study folder
    tune: TuneConfig
    metric: str
    minimize: bool
    seed: int
    threads: int | None  # train.threads for each trial (None: the experiment sets it)
    session: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def name(self) -> str:
        return self.out.resolve().name

    @property
    def storage(self) -> str:
        return self.tune.storage or f"sqlite:///{(self.out / STUDY_DB).resolve()}"

    @property
    def owner(self) -> str:
        """Whose RUNNING trials a new session may continue: this folder on this machine."""
        return f"{socket.gethostname()}:{self.out.resolve()}"


def require_optuna() -> None:
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise TuneError(f"dlforge tune needs Optuna; install it with {INSTALL}") from None


def open_study(spec: StudySpec, worker: int = 0) -> optuna.Study:
    """The study in its storage (created once, then loaded); each worker samples with its own seed."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tune = spec.tune
    pruner: optuna.pruners.BasePruner
    if tune.pruner == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=tune.startup_trials,
                                             n_warmup_steps=tune.prune_after_epochs)
    elif tune.pruner == "asha":
        pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=tune.prune_after_epochs)
    else:
        pruner = optuna.pruners.NopPruner()
    sampler = optuna.samplers.TPESampler(seed=spec.seed + worker, n_startup_trials=tune.startup_trials)
    return optuna.create_study(storage=spec.storage, study_name=spec.name, load_if_exists=True, pruner=pruner,
                               sampler=sampler, direction="minimize" if spec.minimize else "maximize")


@contextlib.contextmanager
def session_lock(out: Path) -> Iterator[None]:
    """One `dlforge tune` per study folder at a time (its RUNNING trials are then surely orphans or its own)."""
    from filelock import FileLock, Timeout

    out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(out / SESSION_LOCK, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise TuneError(f"{out} is used by another dlforge tune; wait for it or stop it, then run this again "
                        "(the study continues where it stopped)") from None
    try:
        yield
    finally:
        lock.release()


def run_study(spec: StudySpec, parallel: int) -> optuna.Study:
    """Run trials until the study has `tune.trials` of them: `parallel` worker processes, each a loop."""
    import optuna

    with session_lock(spec.out):
        study = open_study(spec)
        if parallel == 1:
            work(spec, 0, None)
        else:
            context = multiprocessing.get_context("spawn")  # no forked torch state; CUDA-safe
            procs = [context.Process(target=work, args=(spec, i, os.getpid()), name=f"tune-worker-{i}")
                     for i in range(parallel)]
            for proc in procs:
                proc.start()
            try:
                for proc in procs:
                    proc.join()
            except KeyboardInterrupt:
                for proc in procs:
                    proc.join(timeout=30)
                raise
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if trial.user_attrs.get("session") == spec.session:  # its worker died without an answer
                study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        return study


def work(spec: StudySpec, worker: int, parent: int | None) -> None:
    """One worker: claim a trial, train it, tell the study; until the study has all its trials."""
    if parent is not None:
        import signal

        die_with_parent(parent, signal.SIGKILL)  # a killed study leaves RUNNING trials, continued next time
    study = open_study(spec, worker)
    while (claimed := claim(study, spec)) is not None:
        run_trial(study, spec, *claimed)


def claim(study: optuna.Study, spec: StudySpec) -> tuple[optuna.Trial, bool] | None:
    """(trial, continued): an orphan of a killed session first, else a new trial while the study lacks some."""
    import optuna
    from filelock import FileLock

    with FileLock(spec.out / CLAIM_LOCK):
        trials = study.get_trials(deepcopy=False)
        for frozen in trials:
            attrs = frozen.user_attrs
            if (frozen.state == optuna.trial.TrialState.RUNNING and attrs.get("owner") == spec.owner
                    and attrs.get("session") != spec.session):
                trial = optuna.Trial(study, frozen._trial_id)
                trial.set_user_attr("session", spec.session)
                return trial, True
        if len(trials) >= spec.tune.trials:
            return None
        trial = study.ask()
        trial.set_user_attr("owner", spec.owner)
        trial.set_user_attr("session", spec.session)
        return trial, False


def trial_dir(out: Path, number: int) -> Path:
    return out / f"trial-{number:04d}"


def run_trial(study: optuna.Study, spec: StudySpec, trial: optuna.Trial, continued: bool) -> None:
    """Train one trial's run directory; report each epoch's metric (the pruner may stop it), then tell."""
    import optuna

    from dlforge.train.checkpoint import list_checkpoints
    from dlforge.train.run import train_run
    from dlforge.tune.space import suggest, trial_experiment

    values = suggest(trial, spec.tune.space)  # a continued trial gets back the values it had
    run_dir = trial_dir(spec.out, trial.number)
    extra = [f"name={run_dir.name}", "train.progress=false"]
    if spec.threads is not None:
        extra.append(f"train.threads={spec.threads}")
    reported = set(study._storage.get_trial(trial._trial_id).intermediate_values)

    def report(row: dict[str, Any]) -> None:
        if row["epoch"] not in reported:  # a continued trial repeats no epoch it reported before it was killed
            trial.report(float(row[spec.metric]), row["epoch"])
        if trial.should_prune():
            raise optuna.TrialPruned(f"epoch {row['epoch']}")

    trial.set_user_attr("run_dir", str(run_dir))
    resume = continued and bool(list_checkpoints(run_dir / "checkpoints"))
    try:
        cfg = trial_experiment(spec.config, spec.base, values, extra)
        metrics = train_run(cfg, run_dir, resume=resume, overwrite=not resume, on_epoch=report)
    except optuna.TrialPruned as stop:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        _say(trial.number, f"pruned after {stop}")
        return
    except (UserError, ValueError, RuntimeError, FloatingPointError) as exc:  # a bad corner of the space
        trial.set_user_attr("error", str(exc).splitlines()[0][:500])
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        _say(trial.number, f"failed: {str(exc).splitlines()[0]}")
        logging.getLogger("dlforge.tune").debug("trial %d failed", trial.number, exc_info=True)
        return
    steps = study._storage.get_trial(trial._trial_id).intermediate_values
    value = (min if spec.minimize else max)(steps.values())
    trial.set_user_attr("test", {k: v for k, v in metrics.items() if isinstance(v, int | float)
                                 and not isinstance(v, bool)})
    study.tell(trial, value)
    _say(trial.number, f"{spec.metric} {value:.4f} after {len(steps)} epochs")


def _say(number: int, what: str) -> None:
    console.print(f"trial {number}: {what}", highlight=False)
