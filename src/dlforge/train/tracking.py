"""Experiment tracking (`train.loggers`): metrics.csv, TensorBoard and MLflow behind one small interface.

The loop calls `Tracking`: `start` once (after a resume's restore), `step` every `train.log_every_steps`
optimizer steps (the only place a loss is read back from the device), `epoch` with each history row, and
`finish` with the test metrics and report. Only the main worker logs: the others get a `Tracking` with no
loggers, whose `due` is always false. Every scalar is logged against the global optimizer step, so a resumed
run drops what was logged after its checkpoint (TensorBoard's purge_step, the CSV's later rows) and goes on.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from dlforge.config import ExperimentConfig

CSV_FILE, TENSORBOARD_DIR = "metrics.csv", "tensorboard"
MLFLOW_RUN_ID, MLFLOW_DB, MLFLOW_ARTIFACTS = "mlflow_run_id.txt", "mlflow.db", "mlartifacts"
TRACKING_ENTRIES = (CSV_FILE, TENSORBOARD_DIR, MLFLOW_RUN_ID, MLFLOW_DB, MLFLOW_ARTIFACTS)  # what --overwrite removes
LIBRARIES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}  # logger -> the module it needs
INSTALL = "pip install 'dlforge[tracking]'"


def logger_problems(names: Sequence[str]) -> list[str]:
    """One `train.loggers:` problem per logger whose library is not installed."""
    return [f"train.loggers: {name} needs the {module} package; install it with {INSTALL}"
            for name in dict.fromkeys(names) if (module := LIBRARIES.get(name))
            and importlib.util.find_spec(module) is None]


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"train": {"optimizer": {"lr": 0.1}}}` -> `{"train.optimizer.lr": 0.1}`; lists become JSON text."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, list | dict) else value
    return flat


class Logger(Protocol):
    def scalars(self, step: int, epoch: int, values: dict[str, float]) -> None: ...
    def finish(self, cfg: ExperimentConfig, run_dir: Path, metrics: dict[str, float]) -> None: ...
    def close(self, ok: bool) -> None: ...


class CsvLogger:
    """metrics.csv in long form (step, epoch, metric, value): per-step and per-epoch rows in one file."""

    def __init__(self, run_dir: Path, resume_step: int | None) -> None:
        path = run_dir / CSV_FILE
        kept: list[list[str]] = []
        if resume_step is not None and path.is_file():
            with path.open(newline="") as f:
                kept = [row for row in list(csv.reader(f))[1:] if int(row[0]) <= resume_step]
        self.file = path.open("w", newline="")
        self.writer = csv.writer(self.file)
        self.writer.writerows([["step", "epoch", "metric", "value"], *kept])

    def scalars(self, step: int, epoch: int, values: dict[str, float]) -> None:
        self.writer.writerows([step, epoch, name, value] for name, value in values.items())
        self.file.flush()

    def finish(self, cfg: ExperimentConfig, run_dir: Path, metrics: dict[str, float]) -> None:
        pass  # metrics.json already holds the test metrics

    def close(self, ok: bool) -> None:
        self.file.close()


class TensorBoardLogger:
    """run_dir/tensorboard: scalars, then the config (hparams + text), the report's PNGs as images and its
    Markdown files (a translation run's samples) as text."""

    def __init__(self, run_dir: Path, resume_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops events a killed run logged after its last checkpoint
        self.writer = SummaryWriter(str(run_dir / TENSORBOARD_DIR),
                                    purge_step=resume_step + 1 if resume_step is not None else None)

    def scalars(self, step: int, epoch: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    def finish(self, cfg: ExperimentConfig, run_dir: Path, metrics: dict[str, float]) -> None:
        import numpy as np
        from PIL import Image
        from torch.utils.tensorboard.summary import hparams

        from dlforge.config import dump_config

        self.writer.add_text("config", f"```yaml\n{dump_config(cfg)}```")
        params = {k: v if isinstance(v, int | float | str | bool) else str(v)
                  for k, v in flatten(cfg.model_dump(mode="json")).items()}
        events = self.writer.file_writer
        assert events is not None  # open until close()
        for summary in hparams(params, {f"test/{k}": v for k, v in metrics.items()}):
            events.add_summary(summary)
        for k, v in metrics.items():
            self.writer.add_scalar(f"test/{k}", v)
        for png in sorted((run_dir / "report").glob("*.png")):
            with Image.open(png) as img:
                self.writer.add_image(f"report/{png.stem}", np.asarray(img.convert("RGB")), dataformats="HWC")
        for text in sorted((run_dir / "report").glob("*.md")):  # e.g. a translation run's samples, as text
            self.writer.add_text(f"report/{text.stem}", text.read_text())

    def close(self, ok: bool) -> None:
        self.writer.close()


class MlflowLogger:
    """One MLflow run per run directory (its id in mlflow_run_id.txt, which --resume continues).

    Tracking URI: train.mlflow_uri, else MLFLOW_TRACKING_URI, else sqlite in the run directory."""

    def __init__(self, cfg: ExperimentConfig, run_dir: Path, resume: bool) -> None:
        from mlflow.tracking import MlflowClient

        uri, local = mlflow_uri(cfg, run_dir)
        self.client = MlflowClient(uri)
        self.pending: list[Any] = []  # queued asynchronous writes (RunOperations)
        saved = run_dir / MLFLOW_RUN_ID
        if resume and saved.is_file():
            self.run_id = saved.read_text().strip()
            self.client.update_run(self.run_id, status="RUNNING")
            return
        found = self.client.get_experiment_by_name(cfg.name)
        experiment = found.experiment_id if found else self.client.create_experiment(
            cfg.name, artifact_location=(run_dir / MLFLOW_ARTIFACTS).resolve().as_uri() if local else None)
        self.run_id = self.client.create_run(experiment, run_name=run_dir.resolve().name).info.run_id
        saved.write_text(self.run_id + "\n")

    def scalars(self, step: int, epoch: int, values: dict[str, float]) -> None:
        """Queued (MLflow's asynchronous logging): a synchronous write per log cost ~20 ms of training each."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        pending = self.client.log_batch(self.run_id, metrics=[Metric(k.replace("/", "_"), v, now, step)
                                                              for k, v in values.items()], synchronous=False)
        if pending is not None:
            self.pending.append(pending)

    def flush(self) -> None:
        """Wait for every queued write (before the run's end is recorded: nothing logged is lost)."""
        for pending in self.pending:
            pending.wait()
        self.pending = []

    def finish(self, cfg: ExperimentConfig, run_dir: Path, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric, Param

        self.flush()
        params = [Param(k, str(v)[:6000]) for k, v in flatten(cfg.model_dump(mode="json")).items()]
        existing = self.client.get_run(self.run_id).data.params  # a resumed run logged them already
        params = [p for p in params if p.key not in existing]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(f"test_{k}", v, now, 0) for k, v in metrics.items()])
        for name in ("config.yaml", "metrics.json", "run.json"):
            if (run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(run_dir / name))
        if (run_dir / "report").is_dir():
            self.client.log_artifacts(self.run_id, str(run_dir / "report"), "report")

    def close(self, ok: bool) -> None:
        self.flush()
        self.client.set_terminated(self.run_id, "FINISHED" if ok else "FAILED")


def mlflow_uri(cfg: ExperimentConfig, run_dir: Path) -> tuple[str, bool]:
    """(tracking URI, whether it is the run directory's own sqlite file)."""
    uri = cfg.train.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI")
    return (uri, False) if uri else (f"sqlite:///{(run_dir / MLFLOW_DB).resolve()}", True)


def log_package(run_dir: Path, package: Path) -> None:
    """A run tracked with MLflow gets its exported package as artifacts (`package/`), and the sha256 of each
    of its files (as the manifest lists them) as tags `package.sha256.<file>`, so a registry can verify it."""
    if not (run_dir / MLFLOW_RUN_ID).is_file():
        return
    from mlflow.entities import RunTag
    from mlflow.tracking import MlflowClient

    from dlforge.config import load_config

    cfg = load_config(run_dir / "config.yaml")
    if "mlflow" not in cfg.train.loggers:
        return
    client, run_id = MlflowClient(mlflow_uri(cfg, run_dir)[0]), (run_dir / MLFLOW_RUN_ID).read_text().strip()
    client.log_artifacts(run_id, str(package), "package")
    files = json.loads((package / "manifest.json").read_text())["files"]
    tags = [RunTag(f"package.sha256.{name}", entry["sha256"]) for name, entry in sorted(files.items())]
    tags.append(RunTag("package.manifest_sha256", hashlib.sha256((package / "manifest.json").read_bytes())
                       .hexdigest()))
    client.log_batch(run_id, tags=tags)


class Tracking:
    """The loggers of `train.loggers` (none on workers other than the main one)."""

    def __init__(self, names: Sequence[str] = (), every: int = 10, samples_per_step: int = 0) -> None:
        self.names, self.every, self.samples_per_step = list(dict.fromkeys(names)), every, samples_per_step
        self.loggers: list[Logger] = []
        self.clock = (0, time.perf_counter())  # (step, time) of the last per-step log: samples/s since then

    def start(self, cfg: ExperimentConfig, run_dir: Path, resume: bool, step: int) -> None:
        """Open the loggers; a resumed run (`resume`, restored at optimizer step `step`) continues their logs."""
        at = step if resume else None
        for name in self.names:
            if name == "csv":
                self.loggers.append(CsvLogger(run_dir, at))
            elif name == "tensorboard":
                self.loggers.append(TensorBoardLogger(run_dir, at))
            elif name == "mlflow":
                self.loggers.append(MlflowLogger(cfg, run_dir, resume))
        self.clock = (step, time.perf_counter())

    def due(self, step: int) -> bool:
        return bool(self.loggers) and step % self.every == 0

    def step(self, step: int, epoch: int, losses: dict[str, Any], lr: float) -> None:
        """Per-step scalars; `losses` are device tensors, read here (a sync, every `every` steps only)."""
        now = time.perf_counter()
        values = {f"step/{k}": float(v) for k, v in losses.items()}
        values["step/lr"] = lr
        if step > self.clock[0]:
            values["step/samples_per_s"] = (step - self.clock[0]) * self.samples_per_step / (now - self.clock[1])
        self.clock = (step, now)
        self._scalars(step, epoch, values)

    def epoch(self, row: dict[str, Any]) -> None:
        """A history row: every train and validation metric of the epoch."""
        values = {f"epoch/{k}": float(v) for k, v in row.items()  # numbers only: a task may record None
                  if k not in ("epoch", "step") and isinstance(v, int | float) and not isinstance(v, bool)}
        self._scalars(row["step"], row["epoch"], values)
        self.clock = (row["step"], time.perf_counter())  # validation time is not training throughput

    def finish(self, cfg: ExperimentConfig, run_dir: Path, metrics: dict[str, Any]) -> None:
        """Once, after the report: hparams (the flattened config), test metrics, report images, metrics.json."""
        scalars = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
        for logger in self.loggers:
            logger.finish(cfg, run_dir, scalars)

    def close(self, ok: bool = True) -> None:
        for logger in self.loggers:
            logger.close(ok)
        self.loggers = []

    def _scalars(self, step: int, epoch: int, values: dict[str, float]) -> None:
        for logger in self.loggers:
            logger.scalars(step, epoch, values)
