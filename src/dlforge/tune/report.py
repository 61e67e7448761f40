"""What a study leaves beside its trials: trials.csv, the best config as YAML, importances and plots."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from rich.table import Table

from dlforge.config import apply_overrides, read_yaml
from dlforge.console import console
from dlforge.tune.space import overrides
from dlforge.tune.study import StudySpec, trial_dir

if TYPE_CHECKING:
    import optuna

TRIALS_CSV, BEST_YAML, SUMMARY_JSON = "trials.csv", "best.yaml", "study.json"
PLOTS = {"importance.png": "plot_param_importances", "parallel_coordinate.png": "plot_parallel_coordinate",
         "history.png": "plot_optimization_history"}


def rows(study: optuna.Study, spec: StudySpec) -> list[dict[str, Any]]:
    """One row per trial: number, state, value, the values tried, epochs, seconds, its run directory."""
    out = []
    for t in study.get_trials(deepcopy=False):
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and \
            t.datetime_start else None
        out.append({"trial": t.number, "state": t.state.name.lower(), spec.metric: t.value,
                    **{k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in t.params.items()},
                    "epochs": len(t.intermediate_values), "seconds": round(seconds, 1) if seconds else None,
                    "run_dir": str(trial_dir(spec.out, t.number))})
    return out


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    import optuna

    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return study.best_trial if done else None


def importances(study: optuna.Study) -> dict[str, float]:
    """fANOVA importance of each key for the metric (empty until two complete trials differ)."""
    import optuna

    try:
        return dict(optuna.importance.get_param_importances(study))
    except (ValueError, RuntimeError):
        return {}


def write_report(study: optuna.Study, spec: StudySpec) -> dict[str, Any]:
    """Write the files, print the table; returns the summary (also in study.json)."""
    table = rows(study, spec)
    keys = list(dict.fromkeys(k for row in table for k in row))
    with (spec.out / TRIALS_CSV).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(table)
    best = best_trial(study)
    summary: dict[str, Any] = {"metric": spec.metric, "direction": "minimize" if spec.minimize else "maximize",
                               "trials": len(table), "states": _count_states(table),
                               "storage": spec.storage, "study": spec.name}
    if best is not None:
        raw = apply_overrides(read_yaml(spec.config) if spec.config else _default(), spec.base)
        raw = apply_overrides(raw, overrides(_values(best, spec)))
        raw.pop("tune", None)
        (spec.out / BEST_YAML).write_text(f"# dlforge tune: trial {best.number}, {spec.metric} {best.value:.4f}\n"
                                          + yaml.safe_dump(raw, sort_keys=False))
        summary.update(best_trial=best.number, best_value=best.value, best_values=_values(best, spec),
                       best_run_dir=str(trial_dir(spec.out, best.number)), best_test=best.user_attrs.get("test"),
                       importance=importances(study))
        _plots(study, spec.out)
    (spec.out / SUMMARY_JSON).write_text(json.dumps(summary, indent=2) + "\n")
    _print(table, spec, summary)
    return summary


def _values(trial: optuna.trial.FrozenTrial, spec: StudySpec) -> dict[str, Any]:
    """The trial's values as the experiment takes them (choices of lists back from their JSON)."""
    from dlforge.tune.space import _choice_value

    return {k: _choice_value(v) if spec.tune.space[k].choice is not None else v for k, v in trial.params.items()
            if k in spec.tune.space}


def _default() -> dict[str, Any]:
    from dlforge.config.loading import DEFAULT_CONFIG

    return read_yaml(DEFAULT_CONFIG)


def _count_states(table: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in table:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    return counts


def _plots(study: optuna.Study, out: Path) -> None:
    """Optuna's own matplotlib plots (importance needs two complete trials that differ)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    for name, function in PLOTS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "experimental" notices
            try:
                axes = getattr(plots, function)(study)
            except (ValueError, RuntimeError):
                continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.set_size_inches(10, 6)
        figure.tight_layout()
        figure.savefig(out / name, dpi=100)
        plt.close(figure)


def _print(table: list[dict[str, Any]], spec: StudySpec, summary: dict[str, Any]) -> None:
    """Trials best first: the metric, state, epochs and time, then the values tried (short key names)."""
    view = Table(title=f"{spec.name}: {len(table)} trials ({spec.metric}, "
                       f"{'lower' if spec.minimize else 'higher'} is better)")
    for column in ("trial", spec.metric, "state", "epochs", "s"):
        view.add_column(column, justify="right", no_wrap=True)
    view.add_column("values")
    ranked = sorted(table, key=lambda r: (r[spec.metric] is None,
                                          (r[spec.metric] or 0) * (1 if spec.minimize else -1)))
    for row in ranked:
        values = " ".join(f"{key.rsplit('.', 1)[-1]}={_fmt(row[key])}" for key in spec.tune.space if key in row)
        view.add_row(str(row["trial"]), _fmt(row[spec.metric]), row["state"], str(row["epochs"]),
                     _fmt(row["seconds"]), values)
    console.print(view)
    if "best_trial" in summary:
        console.print(f"best: trial {summary['best_trial']} ({spec.metric} {summary['best_value']:.4f}) → "
                      f"{spec.out / BEST_YAML}; its run: {summary['best_run_dir']}", highlight=False)
        if summary["importance"]:
            console.print("importance: " + ", ".join(f"{k} {v:.2f}" for k, v in summary["importance"].items()),
                          highlight=False)


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
