"""The `dlforge` command: the only place that wires config, data, model, training and the rest together."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from dlforge.config import ConfigError, ExperimentConfig
from dlforge.config.components import describe

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="markdown",
                  help="From a YAML model description to a trained, evaluated and exported model.")
console = Console()
err = Console(stderr=True, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])

ConfigArg = Annotated[Path | None, typer.Argument(help="experiment YAML; built-in digits CNN if omitted")]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="run directory (default runs/<name>)")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="override a key: --set train.epochs=5")]


def user_errors(fn: F) -> F:
    """Show bad input as a short red message and exit 2, never a traceback."""
    from dlforge.data.datasets import DataError
    from dlforge.nn import ModelBuildError
    from dlforge.rundir import RunDirError

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ConfigError, ModelBuildError, DataError, RunDirError) as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def _load(config: Path | None, overrides: list[str] | None) -> ExperimentConfig:
    from dlforge.experiment import load_experiment

    return load_experiment(config, overrides)


def _run_dir(cfg: ExperimentConfig, out: Path | None) -> Path:
    return out or Path("runs") / cfg.name


def print_metrics(metrics: dict[str, Any], title: str) -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("accuracy", "precision", "recall", "f1", "loss"):
        if key in metrics:
            table.add_row(key, f"{metrics[key]:.4f}")
    console.print(table)


@app.command()
@user_errors
def run(config: ConfigArg = None, out: OutOpt = None, set_: SetOpt = None) -> None:
    """Train → evaluate → export in one go.

    Examples: `dlforge run` (the built-in digits CNN), `dlforge run examples/digits_cnn.yaml --set train.epochs=5`
    """
    from dlforge.train.run import train_run

    cfg = _load(config, set_)
    run_dir = _run_dir(cfg, out)
    metrics = train_run(cfg, run_dir)
    print_metrics(metrics, f"{cfg.name}: test split")
    _export_if_available(cfg, run_dir)
    console.print(f"run directory: [bold]{run_dir}[/] (metrics.json, model.safetensors, report/, checkpoints/)")


def _export_if_available(cfg: ExperimentConfig, run_dir: Path) -> None:
    try:
        from dlforge.export.package import export_run
    except ImportError:
        return
    if cfg.export.enabled:
        package = export_run(run_dir)
        console.print(f"model package: [bold]{package}[/]")


NprocOpt = Annotated[int | None, typer.Option("--nproc", min=1,
                                              help="local workers, launched through torchrun (DDP / FSDP)")]
RestartsOpt = Annotated[int, typer.Option("--max-restarts", min=0,
                                          help="with --nproc: restart the worker group this often after a failure")]


@app.command()
@user_errors
def train(config: ConfigArg = None, out: OutOpt = None, set_: SetOpt = None,
          resume: Annotated[bool, typer.Option(help="continue from the last checkpoint in --out")] = False,
          nproc: NprocOpt = None, max_restarts: RestartsOpt = 0) -> None:
    """Train (and evaluate on the test split); writes the run directory.

    `train.batch_size` is the GLOBAL batch, split evenly across workers; the learning rate keeps its meaning.

    Examples: `dlforge train examples/digits_resnet.yaml --out runs/r18`, then `... --resume` after a stop;
    `dlforge train cfg.yaml --nproc 2 --max-restarts 3`; on several machines
    `torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint head:29400 -m dlforge train cfg.yaml`.
    """
    cfg = _load(config, set_)
    run_dir = _run_dir(cfg, out)
    if nproc is not None or max_restarts > 0:
        nproc = nproc or 1
        _launch_workers(config, run_dir, set_, resume, nproc, max_restarts)
        from dlforge.rundir import METRICS

        print_metrics(json.loads((run_dir / METRICS).read_text()), f"{cfg.name}: test split ({nproc} workers)")
        return
    from dlforge.train.dist import reports_to_user
    from dlforge.train.run import train_run

    metrics = train_run(cfg, run_dir, resume)
    if reports_to_user():
        print_metrics(metrics, f"{cfg.name}: test split")


def _launch_workers(config: Path | None, run_dir: Path, overrides: list[str] | None, resume: bool,
                    nproc: int, max_restarts: int) -> None:
    """Re-run this command in `nproc` workers under torchrun; a failed worker becomes a clear error (exit 1)."""
    from dlforge.train.dist import WorkerFailed, launch, under_launcher

    if under_launcher():
        err.print("[bold red]error:[/] --nproc/--max-restarts given inside torchrun; drop them there")
        raise typer.Exit(2)
    worker_args = ["train", *([str(config)] if config else []), "--out", str(run_dir.resolve())]
    worker_args += [arg for value in overrides or [] for arg in ("--set", value)]
    worker_args += ["--resume"] if resume else []
    try:
        launch(nproc, max_restarts, worker_args)
    except WorkerFailed as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
        raise typer.Exit(1) from None


@app.command()
@user_errors
def evaluate(run_dir: Annotated[Path, typer.Argument(help="a finished run directory")]) -> None:
    """Recompute test metrics and plots of a run directory in one process.

    Example: `dlforge evaluate runs/digits_cnn`
    """
    from dlforge.evaluate.report import evaluate_run

    metrics = evaluate_run(run_dir)
    print_metrics(metrics, f"{run_dir}: test split")
    console.print(f"wrote {run_dir / 'metrics.json'} and {run_dir / 'report'}/")


def _print_components(title: str, rows: list[tuple[str, str, str]]) -> None:
    table = Table(title=title, show_lines=False)
    for col in ("name", "parameters", "what it is"):
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console.print(table)


@app.command()
def layers() -> None:
    """List every layer type a `model.layers` list may use, with its parameters."""
    from dlforge.nn import LAYERS

    _print_components("layers", describe(LAYERS))


@app.command()
def models() -> None:
    """List the named architectures for `model.arch`, with their parameters."""
    from dlforge.nn import MODELS

    _print_components("architectures", describe(MODELS))


@app.command()
def schema() -> None:
    """Print the JSON Schema of the experiment file."""
    json.dump(ExperimentConfig.model_json_schema(), sys.stdout, indent=2)
    sys.stdout.write("\n")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
