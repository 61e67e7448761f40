"""The `dlforge` command: the only place that wires config, data, model, training and the rest together."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from typer.core import TyperGroup

from dlforge.cli_data import data_app
from dlforge.cli_serve import serve
from dlforge.cli_tune import tune
from dlforge.console import console, print_error, print_warning
from dlforge.errors import UserError

if TYPE_CHECKING:  # `dlforge --help` loads no config schema, numpy or torch: each command imports what it uses
    from dlforge.config import ExperimentConfig

class _Commands(TyperGroup):
    """Every command runs inside this: a UserError becomes one `error:` line and exit status 2."""

    def invoke(self, ctx: Any) -> Any:  # typer.Context (typer vendors its own click)
        try:
            return super().invoke(ctx)
        except UserError as exc:
            print_error(exc)
            raise typer.Exit(2) from None


app = typer.Typer(cls=_Commands, add_completion=False, no_args_is_help=True, rich_markup_mode="markdown",
                  help="From a YAML model description to a trained, evaluated and exported model.")

ConfigArg = Annotated[Path | None, typer.Argument(help="experiment YAML; built-in digits CNN if omitted")]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="run directory (default `runs/<name>`)")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s", help="override a key: --set train.epochs=5")]
OverwriteOpt = Annotated[bool, typer.Option(help="replace the run already in --out (its files are removed first)")]


def _load(config: Path | None, overrides: list[str] | None) -> ExperimentConfig:
    from dlforge.experiment import load_experiment

    return load_experiment(config, overrides)


def _run_dir(cfg: ExperimentConfig, out: Path | None) -> Path:
    return out or Path("runs") / cfg.name


def print_metrics(metrics: dict[str, Any], title: str, task: str) -> None:
    """The task's headline metrics (`Task.summary`) as a table."""
    from dlforge.taskapi import get_task

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in get_task(task).summary:
        if isinstance(metrics.get(key), float | int):
            table.add_row(key, f"{metrics[key]:.4f}")
    console.print(table)


@app.command()
def run(config: ConfigArg = None, out: OutOpt = None, set_: SetOpt = None, overwrite: OverwriteOpt = False) -> None:
    """Train → evaluate → export in one go.

    Examples: `dlforge run` (the built-in digits CNN), `dlforge run examples/digits_cnn.yaml --set train.epochs=5`
    """
    from dlforge.train.run import train_run

    cfg = _load(config, set_)
    run_dir = _run_dir(cfg, out)
    with _resumable(config, run_dir, set_):
        metrics = train_run(cfg, run_dir, overwrite=overwrite)
    print_metrics(metrics, f"{cfg.name}: test split", cfg.task)
    if cfg.export.enabled:
        from dlforge.export.package import export_run
        from dlforge.train.tracking import log_package

        package = export_run(run_dir)
        log_package(run_dir, package)  # an MLflow-tracked run gets its package (and hashes) as artifacts
        console.print(f"model package: [bold]{package}[/]")
    console.print(f"run directory: [bold]{run_dir}[/] (metrics.json, model.safetensors, report/, checkpoints/)")


NprocOpt = Annotated[int | None, typer.Option("--nproc", min=1,
                                              help="local workers, launched through torchrun (DDP / FSDP)")]
RestartsOpt = Annotated[int, typer.Option("--max-restarts", min=0,
                                          help="with --nproc: restart the worker group this often after a failure")]


@app.command()
def train(config: ConfigArg = None, out: OutOpt = None, set_: SetOpt = None,
          resume: Annotated[bool, typer.Option(help="continue from the last checkpoint in --out")] = False,
          overwrite: OverwriteOpt = False, nproc: NprocOpt = None, max_restarts: RestartsOpt = 0) -> None:
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
        _check_before_launch(cfg, nproc, run_dir, resume, overwrite)
        _launch_workers(config, run_dir, set_, ["--resume"] * resume + ["--overwrite"] * overwrite, nproc,
                        max_restarts)
        from dlforge.rundir import METRICS

        print_metrics(json.loads((run_dir / METRICS).read_text()), f"{cfg.name}: test split ({nproc} workers)",
                      cfg.task)
        return
    from dlforge.train.dist import reports_to_user
    from dlforge.train.run import train_run

    with _resumable(config, run_dir, set_):
        metrics = train_run(cfg, run_dir, resume, overwrite)
    if reports_to_user():
        print_metrics(metrics, f"{cfg.name}: test split", cfg.task)


@contextlib.contextmanager
def _resumable(config: Path | None, run_dir: Path, overrides: list[str] | None) -> Iterator[None]:
    """Ctrl-C while training: say how far it got and how to go on (exit status 130), not a traceback."""
    try:
        yield
    except KeyboardInterrupt:
        from dlforge.train.checkpoint import describe_checkpoint, list_checkpoints

        done = list_checkpoints(run_dir / "checkpoints")
        sets = "".join(f" --set {value}" for value in overrides or [])
        where = describe_checkpoint(done[-1] if done else None)
        console.print(f"stopped {where}; continue with --resume: dlforge train "
                      f"{str(config) + ' ' if config else ''}--out {run_dir}{sets} --resume",
                      highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None


def _check_before_launch(cfg: ExperimentConfig, nproc: int, run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse what every worker would refuse, before starting any."""
    from dlforge.data.loaders import per_worker_batch
    from dlforge.rundir import check_not_training, prepare_run_dir
    from dlforge.train.dist import check_sync_batchnorm, pick_device
    from dlforge.train.param_groups import check_freeze_setup

    check_not_training(run_dir)
    per_worker_batch(cfg.train.batch_size, nproc)
    check_sync_batchnorm(cfg.train.sync_batchnorm and nproc > 1, pick_device(cfg.train.device))
    check_freeze_setup(cfg.train, nproc > 1)
    prepare_run_dir(run_dir, cfg, resume, overwrite)


def _launch_workers(config: Path | None, run_dir: Path, overrides: list[str] | None, flags: list[str],
                    nproc: int, max_restarts: int) -> None:
    """Re-run this command in `nproc` workers under torchrun; a failed worker becomes a clear error (exit 1)."""
    from dlforge.train.dist import WorkerFailed, launch, under_launcher

    if under_launcher():
        raise UserError("--nproc/--max-restarts given inside torchrun; drop them there")
    worker_args = ["train", *([str(config)] if config else []), "--out", str(run_dir.resolve())]
    worker_args += [arg for value in overrides or [] for arg in ("--set", value)]
    worker_args += flags
    try:
        launch(nproc, max_restarts, worker_args)
    except WorkerFailed as exc:  # not the user's input: exit status 1, but still one readable line
        print_error(exc)
        raise typer.Exit(1) from None


@app.command()
def init(data: Annotated[Path, typer.Argument(help="a folder of class folders (images, audio, .txt) or a table")],
         out: Annotated[Path | None, typer.Option("--out", "-o", help="the YAML to write (default `<name>.yaml`)")]
         = None,
         force: Annotated[bool, typer.Option(help="replace --out if it exists")] = False) -> None:
    """Look at your data and write a first experiment file for it (task, columns, sizes, a model that fits).

    Examples: `dlforge init photos/`, `dlforge init reviews.csv --out reviews.yaml`, `dlforge init pairs.tsv`
    """
    from dlforge.init_config import write_config

    target, found = write_config(data, out, force)
    what = {"image": "images", "audio": "audio clips", "text_folder": "text files", "text_table": "a text table",
            "pairs": "sentence pairs (translation)"}[found.kind]
    console.print(f"wrote {target} for {what} in {data}; train it with: dlforge run {target}", highlight=False)


@app.command()
def evaluate(run_dir: Annotated[Path, typer.Argument(help="a finished run directory (or, with --data, a package)")],
             data: Annotated[Path | None, typer.Option(
                 help="score a classifier PACKAGE on new labelled data: a folder of label folders, or a table")]
             = None,
             out: Annotated[Path | None, typer.Option("--out", "-o", help="with --data: where metrics.json and "
                                                                           "report/ go (default: evaluation/)")]
             = None,
             column: Annotated[str | None, typer.Option(help="with --data: the table's text column")] = None,
             label_column: Annotated[str, typer.Option(help="with --data: the table's label column")] = "label",
             ) -> None:
    """Recompute test metrics and plots of a run directory in one process, or score a package on new data.

    Examples: `dlforge evaluate runs/digits_cnn`,
    `dlforge evaluate runs/photos/package --data photos/test --out eval/`
    """
    from dlforge.config import load_config
    from dlforge.evaluate.report import evaluate_run
    from dlforge.rundir import CONFIG

    if data is not None:
        from dlforge.evaluate.package_eval import evaluate_package

        folder = out or Path("evaluation")
        metrics = evaluate_package(run_dir, data, folder, column, label_column)
        print_metrics(metrics, f"{run_dir} on {data}", metrics["task"])
        if metrics["unreadable"]:
            print_warning(f"{len(metrics['unreadable'])} inputs could not be read and are not counted "
                          f"(listed in {folder / 'metrics.json'}): {metrics['unreadable'][0]}")
        console.print(f"wrote {folder / 'metrics.json'} and {folder / 'report'}/")
        return
    metrics = evaluate_run(run_dir)
    print_metrics(metrics, f"{run_dir}: test split", load_config(run_dir / CONFIG).task)
    console.print(f"wrote {run_dir / 'metrics.json'} and {run_dir / 'report'}/")


@app.command("augment-preview")
def augment_preview(config: ConfigArg = None, set_: SetOpt = None,
                    out: Annotated[Path, typer.Option("--out", "-o", help="PNG to write")] = Path("preview.png"),
                    images: Annotated[int, typer.Option(min=1, max=32)] = 8,
                    draws: Annotated[int, typer.Option(min=1, max=8)] = 4) -> None:
    """Write a PNG grid: training images (top row) and seeded augmented draws of them.

    Example: `dlforge augment-preview examples/digits_augment.yaml --out preview.png`
    """
    from dlforge.data.preview import write_preview

    cfg = _load(config, set_)
    console.print(f"wrote {write_preview(cfg, out, images, draws)}")


@app.command()
def augmentations() -> None:
    """List the augmentation ops for the `augment:` list, with their parameters."""
    from dlforge.data.augment import AUGMENTATIONS

    _print_components("augmentations", AUGMENTATIONS)


PackageArg = Annotated[Path, typer.Argument(help="a model package folder (e.g. runs/digits_cnn/package)")]


@app.command()
def export(run_dir: Annotated[Path, typer.Argument(help="a finished run directory")],
           quantize: Annotated[str | None, typer.Option(help="int8: also write model.int8.onnx")] = None,
           out: Annotated[Path | None, typer.Option("--out", "-o", help="package folder (default RUN_DIR/package)")]
           = None) -> None:
    """Export a run to a verified model package (ONNX + parity check, optional int8).

    Examples: `dlforge export runs/digits_cnn`, `dlforge export runs/digits_cnn --quantize int8 --out pkg/`
    """
    from dlforge.export.package import export_run, load_package
    from dlforge.train.tracking import log_package

    package = load_package(export_run(run_dir, quantize, out))
    log_package(run_dir, package.root)  # an MLflow-tracked run gets its package (and hashes) as artifacts
    onnx = package.manifest.onnx
    console.print(f"model package: [bold]{package.root}[/] (parity max |onnx - torch| "
                  f"{onnx.parity_max_abs_diff:.2e} on {onnx.parity_samples} samples)")
    _print_quantized(package.manifest.quantized)


def _print_quantized(q: Any) -> None:
    if q is not None:
        console.print(f"int8 ({q.method}): accuracy {q.accuracy:.4f} vs fp32 {q.fp32_accuracy:.4f}; "
                      f"batch-1 latency {q.latency_ms_batch1:.3f} ms vs fp32 {q.fp32_latency_ms_batch1:.3f} ms")


@app.command()
def predict(package: PackageArg,
            files: Annotated[list[Path] | None, typer.Argument(
                help="images (.png, .jpg, …), audio clips (.wav, .flac, .ogg), .npy arrays, or .txt files "
                     "(one text each) for text models")] = None,
            text: Annotated[list[str] | None, typer.Option(
                "--text", "-t", help="a text to classify (repeatable), for text models")] = None,
            top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="labels to show per sample")] = 3,
            int8: Annotated[bool, typer.Option(help="use model.int8.onnx")] = False,
            as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
            out: Annotated[Path, typer.Option("--out", "-o", help="folder for what a task writes (denoised PNGs)")]
            = Path("denoised"),
            input_: Annotated[Path | None, typer.Option(
                "--input", "-i", help="bulk: a table (CSV/TSV/JSONL/Parquet) of texts, or a folder of images or "
                                      "audio clips; needs --output")] = None,
            output: Annotated[Path | None, typer.Option(
                "--output", help="bulk: predictions.csv or .jsonl, one row per input in input order")] = None,
            column: Annotated[str | None, typer.Option(help="bulk: the table's text column (default `text`)")]
            = None) -> None:
    """Classify files with a package's ONNX model (preprocessed exactly as in training); a denoiser's
    package writes denoised PNGs instead.

    Examples: `dlforge predict runs/digits_cnn/package digit.png`, `dlforge predict PKG batch.npy --json`,
    `dlforge predict runs/text_langid/package --text "wie geht es dir" --text "come stai"`,
    `dlforge predict runs/digits_denoise/package noisy.png --out clean/`,
    `dlforge predict runs/spoken_digits/package clip.wav`,
    `dlforge predict runs/text_langid/package --input reviews.csv --column body --output preds.csv`
    """
    from dlforge.export.package import PackageError, load_package
    from dlforge.taskapi import PredictRequest, get_serving

    if input_ is not None or output is not None:
        _predict_bulk(package, files, text, input_, output, column, top_k)
        return
    if not files and not text:
        raise PackageError("nothing to predict: pass files (images, audio clips, .npy, .txt) or --text \"some text\"")
    loaded = load_package(package)
    found = get_serving(loaded.manifest.task).predict(loaded, PredictRequest(files or [], text or [], top_k, int8, out))
    if as_json:
        sys.stdout.write(json.dumps(found.rows, indent=2) + "\n")
        return
    if found.table:
        table = Table(title=f"{package}: top {top_k}")
        for col in found.columns:
            table.add_column(col, justify="right" if col == "probability" else "left")
        for cells in found.table:
            table.add_row(*cells)
        console.print(table)
    for path in found.written:
        console.print(f"wrote {path}")


def _predict_bulk(package: Path, files: list[Path] | None, text: list[str] | None, source: Path | None,
                  output: Path | None, column: str | None, top_k: int) -> None:
    from dlforge.bulk import BulkError, predict_bulk
    from dlforge.export.package import load_package

    if source is None or output is None:
        raise BulkError("bulk prediction needs both --input (a table or a folder) and --output (a .csv or .jsonl)")
    if files or text:
        raise BulkError("give inputs either as FILES / --text or as --input, not both")
    seen, failed = predict_bulk(load_package(package), source, output, column, top_k,
                                progress=sys.stderr.isatty())
    console.print(f"wrote {output}: {seen} predictions" + (f", {failed} inputs with an error (see its error "
                                                            "column)" if failed else ""))


@app.command()
def inspect(package: PackageArg) -> None:
    """Verify a package (every sha256) and summarise it: signature, parity, files, int8, metrics.

    Example: `dlforge inspect runs/digits_cnn/package`
    """
    from dlforge.export.package import load_package

    m = load_package(package).manifest
    console.print(f"[bold]{m.name}[/] version {m.version} ({m.task}), created {m.created}, "
                  f"dlforge {m.dlforge_version}, torch {m.torch_version}")
    for kind, specs in (("input", m.inputs), ("output", m.outputs)):
        for t in specs:
            console.print(f"  {kind:6} {t.name}: {t.datatype} {t.shape}")
    console.print(f"labels ({len(m.labels)}): {', '.join(m.labels[:20])}{' …' if len(m.labels) > 20 else ''}")
    prep = json.dumps(m.preprocessing.model_dump(mode="json"))
    console.print(f"preprocessing: {prep}", highlight=False, markup=False)
    console.print(f"onnx: opset {m.onnx.opset}, parity max |onnx - torch| {m.onnx.parity_max_abs_diff:.2e} "
                  f"on {m.onnx.parity_samples} samples (tolerance {m.onnx.tolerance:g})")
    table = Table(title="files (sha256 verified)")
    for col in ("file", "bytes", "sha256"):
        table.add_column(col, justify="right" if col == "bytes" else "left")
    for name, entry in m.files.items():
        table.add_row(name, f"{entry.bytes:,}", entry.sha256[:16] + "…")
    console.print(table)
    _print_quantized(m.quantized)
    if m.metrics:
        print_metrics(m.metrics, "test metrics (from training)", m.task)


def _print_components(title: str, registry: Any) -> None:
    from dlforge.config.components import describe

    table = Table(title=title, show_lines=False)
    for col in ("name", "parameters", "what it is", "from"):
        table.add_column(col, overflow="fold")
    for row in describe(registry):
        table.add_row(*row)
    console.print(table)


app.add_typer(data_app, name="data")  # cli_data.py


@app.command()
def layers() -> None:
    """List every layer type a `model.layers` list may use, with its parameters."""
    from dlforge.nn import LAYERS

    _print_components("layers", LAYERS)


@app.command()
def models() -> None:
    """List the named architectures for `model.arch` by task, with their parameters."""
    from dlforge.config.components import describe
    from dlforge.nn import MODELS
    from dlforge.nn.seq2seq import SEQ2SEQ_MODELS
    from dlforge.taskapi import TASKS, get_task

    owners: dict[str, list[str]] = {}
    for name in TASKS.names():
        for arch in get_task(name).architectures():
            owners.setdefault(arch, []).append(name)
    table = Table(title="architectures (model.arch), by task")
    for col in ("name", "parameters", "what it is", "from", "task"):
        table.add_column(col, overflow="fold")
    rows = [(*row, ", ".join(owners.get(row[0], ["?"]))) for registry in (MODELS, SEQ2SEQ_MODELS)
            for row in describe(registry)]
    for row in sorted(rows, key=lambda r: (r[-1], r[0])):
        table.add_row(*row)
    console.print(table)


@app.command()
def runs(folder: Annotated[Path, typer.Argument(help="a folder of run directories (searched 3 levels down)")]
         = Path("runs"),
         sort: Annotated[str | None, typer.Option(help="a metric (best first, e.g. accuracy, bleu, fid), name or "
                                                       "time")] = None,
         as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False) -> None:
    """Compare the runs under a folder: task, dataset, status, epochs, training time and headline metrics.

    Examples: `dlforge runs`, `dlforge runs runs/ --sort accuracy`, `dlforge runs sweeps/lr --json`
    """
    from dlforge.errors import UserError
    from dlforge.runs import find_runs, read_run
    from dlforge.taskapi import Task, get_task

    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder; give the folder your runs are in (default runs/)")
    rows = [read_run(path) for path in find_runs(folder)]
    known: dict[str, Task | None] = {}
    for row in rows:  # the task's own headline metrics and direction; a plugin that is gone shows its raw metrics
        if row.task not in known:
            try:
                known[row.task] = get_task(row.task)
            except UserError:
                known[row.task] = None
    if sort is not None:
        rows = _sorted_runs(rows, sort, known)
    if as_json:
        sys.stdout.write(json.dumps([{**r.__dict__, "path": str(r.path)} for r in rows], indent=2) + "\n")
        return
    table = Table(title=f"{len(rows)} runs under {folder}")
    for col in ("run", "task", "dataset", "status", "epochs", "time", "test metrics", "package"):
        table.add_column(col, overflow="fold", justify="right" if col in ("epochs", "time") else "left")
    for r in rows:
        task = known.get(r.task)
        keys = [k for k in (task.summary if task else sorted(r.metrics)) if k in r.metrics][:4]
        table.add_row(str(r.path.relative_to(folder)) if r.path != folder else str(folder), r.task, r.dataset,
                      r.status, r.epochs, f"{r.seconds:.1f} s", ", ".join(f"{k} {r.metrics[k]:.4g}" for k in keys),
                      "yes" if r.packaged else "")
    console.print(table)


def _sorted_runs(rows: list[Any], key: str, tasks: dict[str, Any]) -> list[Any]:
    """Best first for a metric (by the task's own direction), runs without it last; name and time ascending."""
    if key in ("name", "time"):
        return sorted(rows, key=lambda r: r.name if key == "name" else r.seconds)
    if not any(key in r.metrics for r in rows):
        from dlforge.errors import UserError

        names = sorted({k for r in rows for k in r.metrics})
        raise UserError(f"--sort: no run has '{key}' (use name, time or one of: {', '.join(names) or 'none'})")

    def rank(r: Any) -> tuple[bool, float]:
        task = tasks.get(r.task)
        lower = task.minimize(f"val_{key}") if task else key == "loss"
        value = r.metrics.get(key)
        return value is None, 0.0 if value is None else (value if lower else -value)

    return sorted(rows, key=rank)


@app.command()
def tasks() -> None:
    """List the tasks (`task:` in an experiment file), built-in and from plugins, with what they add."""
    import importlib

    from dlforge.taskapi import TASKS

    table = Table(title="tasks")
    for col in ("name", "what it does", "from", "commands"):
        table.add_column(col, overflow="fold")
    for name in TASKS.names():
        entry = TASKS.get(name)
        commands = importlib.import_module(entry.commands).COMMANDS if entry.commands else []
        table.add_row(name, entry.doc, TASKS.origin(name), ", ".join(f"dlforge {c.__name__}" for c in commands))
    console.print(table)


@app.command()
def params(source: Annotated[Path, typer.Argument(help="a run directory or an experiment YAML")],
           set_: SetOpt = None) -> None:
    """Show the optimiser's parameter groups: learning rate, weight decay, trainable and frozen counts.

    Reflects `train.freeze`, `train.param_groups` and `train.layer_decay` as training starts (epoch 1).
    Examples: `dlforge params examples/digits_finetune.yaml`, `dlforge params runs/digits --set train.layer_decay=0.7`
    """
    from dlforge.train.param_groups import describe as describe_groups

    cfg, net, num_classes = _model_of(source, set_)
    rows = describe_groups(net, cfg.train, num_classes)
    table = Table(title=f"{source}: parameter groups (epoch 1)")
    for col in ("group", "from", "lr", "wd", "tensors", "params", "trainable"):
        table.add_column(col, justify="left" if col in ("group", "from") else "right")
    for r in rows:
        table.add_row(r["group"], r["first"].rsplit(".", 1)[0], f"{r['lr']:.3g}", f"{r['weight_decay']:g}",
                      str(r["tensors"]), f"{r['parameters']:,}", f"{r['trainable']:,}")
    console.print(table)
    total, trainable = sum(r["parameters"] for r in rows), sum(r["trainable"] for r in rows)
    console.print(f"{trainable:,} of {total:,} parameters trainable"
                  + (f"; all from epoch {cfg.train.unfreeze_at_epoch}" if cfg.train.unfreeze_at_epoch else ""))


def _model_of(source: Path, overrides: list[str] | None) -> tuple[ExperimentConfig, Any, int | None]:
    """(config, freshly built model, number of classes when the task's model has a classifier) of a run
    directory or an experiment file."""
    from dlforge.taskapi import get_task

    if source.is_dir():
        from dlforge.config import load_config
        from dlforge.rundir import CONFIG, require
        from dlforge.runinfo import RUN_INFO, RunInfo

        require(source, CONFIG, RUN_INFO)
        cfg = load_config(source / CONFIG, overrides)
        info = RunInfo.load(source)
        task = get_task(cfg.task)
        net, num_classes = task.build_model(cfg, info), len(info.labels)
    else:
        from dlforge.vocabulary import reuse_vocabulary

        vocab = reuse_vocabulary(_load(source, overrides))  # a text source's tokenizer sizes the embedding
        cfg, task = vocab.cfg, get_task(vocab.cfg.task)
        bundle = task.load_data(cfg, vocab.folder)
        net, num_classes = task.create_model(cfg, bundle), bundle.num_classes
    return cfg, net, num_classes if task.has_classifier else None


@app.command()
def schema() -> None:
    """Print the JSON Schema of the experiment file."""
    from dlforge.config import ExperimentConfig

    json.dump(ExperimentConfig.model_json_schema(), sys.stdout, indent=2)
    sys.stdout.write("\n")


app.command()(serve)  # cli_serve.py
app.command()(tune)  # cli_tune.py


def _add_task_commands() -> None:
    """Commands a task brings (`TaskEntry.commands`: dlforge translate, dlforge generate, a plugin's own)."""
    import importlib

    from dlforge.taskapi import TASKS

    for name in TASKS.names():
        module = TASKS.get(name).commands
        if module is not None:
            for command in importlib.import_module(module).COMMANDS:
                app.command()(command)


_add_task_commands()


def main() -> None:
    # OpenMP threads that sleep instead of spinning between torch ops: on a machine whose cores other work
    # shares, spinning threads lost 2–5× to one thread (digits epochs 1.5–10 s vs 0.8 s); set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    app()


if __name__ == "__main__":
    main()
