import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from dlforge.cli import app

runner = CliRunner()


def test_layers_and_models_list_the_registries() -> None:
    result = runner.invoke(app, ["layers"])
    assert result.exit_code == 0 and "conv2d" in result.output and "residual" in result.output
    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["models"])
    assert result.exit_code == 0 and "resnet18_tiny" in result.output
    rows = {line.split("│")[1].strip(): line.split("│")[5].strip().split(", ") for line in result.output.splitlines()
            if line.count("│") >= 6 and line.split("│")[1].strip()}
    assert rows["gru_attention"] == ["seq2seq"] and rows["dcgan_generator"] == ["gan"] and rows["unet"] == ["denoise"]
    assert "classification" in rows["resnet18"]  # every task's architectures, named by task (#30)


def test_schema_is_json() -> None:
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    assert "train" in json.loads(result.output)["properties"]


def test_bad_config_exits_2_with_the_path_and_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("train: {epoch: 2}\n")
    proc = subprocess.run([sys.executable, "-m", "dlforge", "train", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "train.epoch: unknown key — did you mean 'epochs'?" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_run_then_evaluate_agree(tmp_path: Path) -> None:
    args = ["run", "--out", str(tmp_path), "--set", "train.epochs=1", "--set", "model.arch=cnn_tiny",
            "--set", "train.progress=false", "--set", "export.enabled=false", "--set", "eval.plots=false"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output
    first = json.loads((tmp_path / "metrics.json").read_text())
    result = runner.invoke(app, ["evaluate", str(tmp_path)])
    assert result.exit_code == 0, result.output
    again = json.loads((tmp_path / "metrics.json").read_text())
    assert again["confusion_matrix"] == first["confusion_matrix"]


def test_evaluate_on_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    result = runner.invoke(app, ["evaluate", str(tmp_path)])
    assert result.exit_code == 2 and "not a finished run directory" in result.output
