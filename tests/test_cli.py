import json
import os
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


def _train_timm(tmp_path: Path, arch: str, pythonpath: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": pythonpath}
    return subprocess.run([sys.executable, "-m", "dlforge", "train", "examples/digits_cnn.yaml", "--out",
                           str(tmp_path / "run"), "--set", f"model.arch={arch}"], capture_output=True, text=True,
                          env=env, cwd=Path(__file__).parent.parent)


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in (proc.stderr + proc.stdout).splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return proc.stderr


def test_timm_that_fails_to_import_is_one_error_line(tmp_path: Path) -> None:
    """#27: a timm whose import raises anything (here the RuntimeError of a torchvision built for another
    torch, from a stand-in package ahead on the path) is one `error:` line naming the torchvision to install."""
    fake = tmp_path / "site" / "timm"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise RuntimeError("operator torchvision::nms does not exist")\n')
    src = str(Path(__file__).parent.parent / "src")
    stderr = _one_error_line(_train_timm(tmp_path, "timm/resnet18", f"{fake.parent}{os.pathsep}{src}"))
    assert "model.arch: timm/resnet18 needs the timm package" in stderr
    assert "RuntimeError: operator torchvision::nms does not exist" in stderr
    assert "install the torchvision built for torch" in stderr


def test_timm_arch_on_this_machine_is_one_error_line(tmp_path: Path) -> None:
    """Whatever timm is here: not importable → resnet18 is refused in one line; importable → an unknown name is."""
    try:
        import timm  # noqa: F401
        arch, expected = "timm/no_such_net", "timm has no architecture 'no_such_net'"
    except Exception:  # missing, or a torchvision that does not fit this torch
        arch, expected = "timm/resnet18", "model.arch: timm/resnet18 needs the timm package"
    src = str(Path(__file__).parent.parent / "src")
    assert expected in _one_error_line(_train_timm(tmp_path, arch, src))
