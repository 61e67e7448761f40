"""Third-party plugins: a task, a dataset, an architecture and a layer from another distribution plug into
every stage without a fork, and a broken plugin costs one `error:` line, not the command.

The plugin is tests/plugins/dlforge_regression, a real distribution (`make` installs it, editable): nothing
of dlforge is mocked here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from dlforge.cli import app
from dlforge.config import ConfigError, ModelConfig, parse_config
from dlforge.data.datasets import DATASETS
from dlforge.experiment import check_experiment
from dlforge.export.onnx import session
from dlforge.export.package import load_package
from dlforge.nn import LAYERS, MODELS, build_model
from dlforge.serve.settings import Settings
from dlforge.taskapi import TASKS
from tests.serve_helpers import SRC, running

PLUGIN = "dlforge-regression"
runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def installed() -> None:
    try:
        distribution(PLUGIN)
    except PackageNotFoundError:
        pytest.fail(f"the {PLUGIN} plugin is not installed: pip install -e tests/plugins/dlforge_regression "
                    "(`make` does it)")


def rows_of(command: str) -> dict[str, list[str]]:
    """`dlforge <command>`'s table: first cell → the row's cells."""
    result = runner.invoke(app, [command], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in result.output.splitlines() if line.count("│") >= 4]
    return {row[0]: row for row in cells}


def test_the_listings_name_the_plugins_distribution() -> None:
    tasks, layers, models = rows_of("tasks"), rows_of("layers"), rows_of("models")
    assert PLUGIN in tasks["regression"] and "dlforge" in tasks["classification"]
    assert PLUGIN in layers["gated_dense"] and "dlforge" in layers["conv2d"]
    assert PLUGIN in models["mlp_regressor"] and PLUGIN in models["mlp_regressor_tiny"]
    assert "hidden=[8]" in models["mlp_regressor_tiny"][1]  # a tiny preset shows its own defaults
    assert DATASETS.origin("diabetes") == TASKS.origin("regression") == PLUGIN
    assert LAYERS.origin("dense") == MODELS.origin("mlp") == "dlforge"


def test_the_plugin_layer_is_a_gated_linear_unit() -> None:
    net = build_model(ModelConfig(layers=[{"gated_dense": {"units": 3, "activation": "sigmoid"}}, {"dense": 1}]),
                      (5,), 1)
    glu = net.body[0]
    x = torch.randn(4, 5)
    value, gate = glu.proj(x).split(3, dim=-1)
    torch.testing.assert_close(glu(x), value * torch.sigmoid(gate))


def test_the_plugin_task_checks_the_experiment_at_load_time() -> None:
    raw = {"task": "regression", "model": {"arch": "mlp_regressor_tiny"}, "train": {"monitor": "val_accuracy"},
           "augment": ["hflip"]}
    with pytest.raises(ConfigError) as err:
        check_experiment(parse_config(raw))
    problems = err.value.problems
    assert any(p.startswith("data.dataset: 'digits' is a dataset for") and p.endswith("diabetes") for p in problems)
    assert any(p.startswith("train.monitor: 'val_accuracy' is not a regression metric") for p in problems)
    assert any(p.startswith("augment: ") for p in problems)
    cfg = check_experiment(parse_config({**raw, "data": {"dataset": "diabetes"}, "train": {}, "augment": []}))
    assert cfg.train.monitor == "val_r2"


def test_the_plugins_serving_side_never_imports_torch() -> None:
    code = ("import sys; from dlforge.taskapi import get_serving; import dlforge.serve.app; "
            "get_serving('regression'); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": SRC})


@pytest.mark.slow
@pytest.mark.serve
def test_a_plugin_task_trains_evaluates_exports_and_serves(tmp_path: Path) -> None:
    experiment = {"name": "diabetes", "task": "regression", "data": {"dataset": "diabetes"},
                  "model": {"arch": "mlp_regressor_tiny"},
                  "train": {"epochs": 10, "batch_size": 32, "optimizer": {"lr": 0.01}, "progress": False}}
    (tmp_path / "diabetes.yaml").write_text(yaml.safe_dump(experiment))
    result = runner.invoke(app, ["run", str(tmp_path / "diabetes.yaml"), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output

    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    # a linear model explains ~0.5 of the variance of the diabetes scores; 10 tiny epochs reach ~0.44
    assert metrics["r2"] > 0.2 and metrics["baseline_r2"] > 0.2
    assert metrics["mae"] <= metrics["mse"] ** 0.5 and metrics["baseline_mae"] <= metrics["baseline_mse"] ** 0.5
    assert metrics["samples"] == 67  # 15 % of 442 patients
    assert {"predictions.png", "learning_curves.png"} <= {p.name for p in (tmp_path / "run/report").iterdir()}

    package = load_package(tmp_path / "run/package")
    manifest = package.manifest
    assert manifest.task == "regression" and manifest.labels == ["disease_progression"]
    assert [o.model_dump() for o in manifest.outputs] == [{"name": "prediction", "datatype": "FP32", "shape": [-1, 1]}]
    assert manifest.onnx.parity_max_abs_diff <= manifest.onnx.tolerance
    assert manifest.metrics["r2"] == metrics["r2"]

    from sklearn.datasets import load_diabetes

    rows = load_diabetes(scaled=False).data[:5].astype(np.float32)  # raw measurements: the graph standardises
    (expected,) = session(package.onnx_path).run(["prediction"], {"input": rows})
    with running(Settings(path=package.root)) as (url, _):
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [5, 10], "data": rows.ravel().tolist()}]}
        response = httpx.post(f"{url}/v2/models/diabetes/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text
    (out,) = response.json()["outputs"]
    assert out["name"] == "prediction" and out["shape"] == [5, 1] and out["datatype"] == "FP32"
    np.testing.assert_allclose(np.array(out["data"]).reshape(5, 1), expected, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_a_broken_plugin_is_one_error_line_and_the_rest_still_works(tmp_path: Path) -> None:
    info = tmp_path / "broken_layers-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-layers\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[dlforge.layers]\nfancy_conv = no_such_module_anywhere:register\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), SRC]), "COLUMNS": "400"}
    proc = subprocess.run([sys.executable, "-m", "dlforge", "layers"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert "fancy_conv (broken-layers)" in errors[0] and "no_such_module_anywhere" in errors[0]
    assert "│ conv2d " in proc.stdout and "│ gated_dense " in proc.stdout  # built-ins and the working plugin
