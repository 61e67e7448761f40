"""train.loggers on real libraries: metrics.csv, a TensorBoard event file read back with tensorboard's own
reader, an MLflow run read back with MlflowClient, and --resume continuing the same logs."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dlforge.cli import app
from dlforge.config import ConfigError
from dlforge.experiment import check_experiment
from dlforge.train.run import train_run
from dlforge.train.tracking import MLFLOW_RUN_ID, Tracking, flatten, logger_problems
from tests.conftest import tiny_config
from tests.serve_helpers import free_port

# digits: 1257 training rows / 64 = 20 optimizer steps per epoch
STEPS_PER_EPOCH = 20


def csv_rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_csv_is_the_default_and_holds_step_and_epoch_rows(tmp_path: Path) -> None:
    cfg = tiny_config()
    assert cfg.train.loggers == ["csv"]
    train_run(cfg, tmp_path)
    rows = csv_rows(tmp_path)
    steps = sorted({int(r["step"]) for r in rows if r["metric"] == "step/train_loss"})
    assert steps == list(range(10, 2 * STEPS_PER_EPOCH + 1, 10))
    assert {"step/lr", "step/samples_per_s"} <= {r["metric"] for r in rows}
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    epoch_rows = {(int(r["epoch"]), r["metric"]): float(r["value"]) for r in rows if r["metric"].startswith("epoch/")}
    for h in history:
        assert epoch_rows[(h["epoch"], "epoch/val_accuracy")] == pytest.approx(h["val_accuracy"])
        assert epoch_rows[(h["epoch"], "epoch/train_loss")] == pytest.approx(h["train_loss"])


def test_no_loggers_writes_no_tracking_files(tmp_path: Path) -> None:
    train_run(tiny_config(train={"epochs": 1, "loggers": []}), tmp_path)
    assert not (tmp_path / "metrics.csv").exists() and not (tmp_path / "tensorboard").exists()


def test_tensorboard_event_file_has_step_and_epoch_scalars_and_the_report_images(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train_run(tiny_config(train={"loggers": ["tensorboard"]}, eval={"plots": True}), tmp_path)
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0, "scalars": 0}).Reload()
    tags = events.Tags()
    assert [e.step for e in events.Scalars("step/train_loss")] == [10, 20, 30, 40]
    assert {"step/lr", "step/samples_per_s", "epoch/val_accuracy", "epoch/val_loss", "test/accuracy"} <= set(
        tags["scalars"])
    assert [e.step for e in events.Scalars("epoch/val_accuracy")] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
    assert {"report/confusion_matrix", "report/learning_curves"} <= set(tags["images"])
    assert events.Images("report/confusion_matrix")[0].width > 0


def test_tensorboard_gets_the_reports_markdown_as_text(tmp_path: Path) -> None:
    """A translation run's report/samples.md (source, reference, greedy and beam outputs) is readable in TensorBoard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (tmp_path / "report").mkdir()
    samples = "| source | reference | greedy |\n|---|---|---|\n| 42 | forty-two | forty-two |\n"
    (tmp_path / "report" / "samples.md").write_text(samples)
    tracking = Tracking(["tensorboard"])
    tracking.start(tiny_config(), tmp_path, resume=False, step=0)
    tracking.finish(tiny_config(), tmp_path, {"bleu": 12.5})
    tracking.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"tensors": 0}).Reload()
    assert "report/samples/text_summary" in events.Tags()["tensors"]
    stored = events.Tensors("report/samples/text_summary")[0].tensor_proto.string_val[0].decode()
    assert stored == samples


def test_mlflow_run_has_params_metrics_and_artifacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # a given sqlite URI keeps MLflow's default artifact root: ./mlruns
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    cfg = tiny_config(train={"epochs": 1, "loggers": ["mlflow"], "mlflow_uri": uri})
    metrics = train_run(cfg, tmp_path / "run")
    run = MlflowClient(uri).get_run((tmp_path / "run" / MLFLOW_RUN_ID).read_text().strip())
    assert run.info.status == "FINISHED"
    assert run.data.params["train.optimizer.lr"] == "0.01" and run.data.params["model.arch"] == "cnn_tiny"
    assert run.data.metrics["test_accuracy"] == pytest.approx(metrics["accuracy"])
    assert {"epoch_val_accuracy", "step_train_loss", "step_lr"} <= set(run.data.metrics)
    artifacts = {a.path for a in MlflowClient(uri).list_artifacts(run.info.run_id)}
    assert {"config.yaml", "metrics.json", "run.json"} <= artifacts
    assert (tmp_path / "mlruns").is_dir() and not (tmp_path / "run" / "mlartifacts").exists()


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """A real `mlflow server` on a free port: sqlite backend, artifacts proxied by the server."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts"), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("mlflow server did not start")
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server's own session: uvicorn and its workers
        server.wait(timeout=30)


def test_an_mlflow_server_receives_params_metrics_and_artifacts(tmp_path: Path, mlflow_server: str) -> None:
    from mlflow.tracking import MlflowClient

    cfg = tiny_config(train={"epochs": 1, "loggers": ["mlflow"], "mlflow_uri": mlflow_server},
                      eval={"plots": True})
    metrics = train_run(cfg, tmp_path / "run")
    client = MlflowClient(mlflow_server)
    run = client.get_run((tmp_path / "run" / MLFLOW_RUN_ID).read_text().strip())
    assert run.info.status == "FINISHED" and run.data.params["model.arch"] == "cnn_tiny"
    assert run.data.metrics["test_accuracy"] == pytest.approx(metrics["accuracy"])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "step_train_loss")] == [10, 20]
    assert {"config.yaml", "metrics.json", "report"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "report/confusion_matrix.png" in {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert not (tmp_path / "run" / "mlflow.db").exists()  # nothing local when a server is given
    # The exported package goes to the same run, with the sha256 of every file its manifest lists.
    assert CliRunner().invoke(app, ["export", str(tmp_path / "run")]).exit_code == 0  # `dlforge export` logs it
    package = tmp_path / "run" / "package"
    manifest = json.loads((package / "manifest.json").read_text())
    tags = client.get_run(run.info.run_id).data.tags
    assert {name: tags[f"package.sha256.{name}"] for name in manifest["files"]} == {
        name: entry["sha256"] for name, entry in manifest["files"].items()}
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "package")}
    assert {"package/manifest.json", "package/model.onnx"} <= logged
    fetched = Path(client.download_artifacts(run.info.run_id, "package/model.onnx", str(tmp_path / "back")))
    assert hashlib.sha256(fetched.read_bytes()).hexdigest() == manifest["files"]["model.onnx"]["sha256"]


def test_resume_continues_the_same_tensorboard_log_and_mlflow_run(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_dir = tmp_path / "run"
    train = {"epochs": 1, "loggers": ["csv", "tensorboard", "mlflow"]}
    train_run(tiny_config(train=train), run_dir)  # the default store: sqlite in the run directory
    first = (run_dir / MLFLOW_RUN_ID).read_text()
    train_run(tiny_config(train={**train, "epochs": 2}), run_dir, resume=True)
    assert (run_dir / MLFLOW_RUN_ID).read_text() == first
    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    assert [e.step for e in events.Scalars("epoch/val_accuracy")] == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    assert [r.info.run_id for r in client.search_runs([client.get_experiment_by_name("tiny").experiment_id])] == [
        first.strip()]
    history = client.get_metric_history(first.strip(), "epoch_val_accuracy")
    assert sorted(m.step for m in history) == [STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH]
    assert sorted({int(r["epoch"]) for r in csv_rows(run_dir) if r["metric"] == "epoch/val_accuracy"}) == [1, 2]


def test_a_missing_library_is_one_error_line_naming_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    assert logger_problems(["csv", "mlflow", "mlflow"]) == [
        "train.loggers: mlflow needs the mlflow package; install it with pip install 'dlforge[tracking]'"]
    with pytest.raises(ConfigError, match=r"train.loggers: mlflow needs"):
        check_experiment(tiny_config(train={"loggers": ["mlflow"]}))


def test_an_unknown_logger_is_refused_by_the_schema() -> None:
    with pytest.raises(ConfigError, match="train.loggers"):
        tiny_config(train={"loggers": ["wandb"]})


def test_flatten_uses_dotted_keys() -> None:
    assert flatten({"train": {"optimizer": {"lr": 0.1}, "loggers": ["csv"]}, "seed": 0}) == {
        "train.optimizer.lr": 0.1, "train.loggers": '["csv"]', "seed": 0}
