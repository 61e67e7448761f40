"""Every mistake a user can make is a `UserError`: one `error:` line from the CLI, exit status 2, no traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dlforge.cli import app
from dlforge.config import ConfigError
from dlforge.data.datasets import DataError
from dlforge.errors import UserError
from dlforge.export.errors import ExportError, InputFileError, PackageError
from dlforge.nn import ModelBuildError
from dlforge.nn.layers import LayerShapeError
from dlforge.preprocessing import PreprocessingError
from dlforge.registry import RegistryError
from dlforge.rundir import RunDirError
from dlforge.serve.repository import ModelLoadFailed, ModelNotFound, RepositoryError
from dlforge.serve.security import AuthError, BodyTooLarge
from dlforge.serve.tensors import ProtocolError
from dlforge.train.dist import UnsupportedSetup

runner = CliRunner()


def fails_cleanly(args: list[str]) -> str:
    """Run the CLI; it must exit 2 with exactly one `error:` line and no traceback. Returns the message."""
    result = runner.invoke(app, args)
    assert result.exit_code == 2, (result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return result.stderr


@pytest.mark.parametrize("kind", [ConfigError, RegistryError, DataError, ModelBuildError, LayerShapeError,
                                  PackageError, ExportError, InputFileError, RunDirError, UnsupportedSetup,
                                  ProtocolError, ModelNotFound, ModelLoadFailed, RepositoryError, AuthError,
                                  BodyTooLarge, PreprocessingError])
def test_every_user_facing_error_derives_from_the_one_root(kind: type[Exception]) -> None:
    assert issubclass(kind, UserError)


def test_unknown_dataset_with_an_augment_list_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("data: {dataset: imagefolder}\naugment: [{rotate: 10}]\n")
    message = fails_cleanly(["train", str(path)])
    assert "data.dataset: unknown dataset 'imagefolder' — did you mean 'image_folder'?" in message


def test_a_global_batch_that_does_not_split_is_refused_before_launching(tmp_path: Path) -> None:
    message = fails_cleanly(["train", "--nproc", "2", "--set", "train.batch_size=63", "--out", str(tmp_path / "r")])
    assert "train.batch_size: the global batch 63 must divide evenly across 2 workers" in message
    assert not (tmp_path / "r").exists()


def test_predict_on_a_corrupt_image_names_the_file(model_package: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png")
    assert f"{broken}: not a readable image" in fails_cleanly(["predict", str(model_package), str(broken)])
    np.save(tmp_path / "ok.npy", np.zeros((1, 8, 8), np.float32))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "ok.npy").read_bytes()[:20])
    assert "not a readable .npy array" in fails_cleanly(["predict", str(model_package), str(tmp_path / "cut.npy")])


def test_predict_names_what_the_model_takes(model_package: Path, tmp_path: Path) -> None:
    """An input of the wrong kind says what this model takes (#29), never a decoder's complaint."""
    clip = tmp_path / "clip.wav"
    clip.write_bytes(b"RIFF")
    notes = tmp_path / "notes.md"
    notes.write_text("hello")
    for args in ([str(clip)], ["--text", "hello"], [str(notes)]):
        message = fails_cleanly(["predict", str(model_package), *args])
        assert "this model (task classification) takes images: pass .png/.jpg files or .npy arrays" in message, message


def test_serving_a_run_directory_suggests_its_package(model_package: Path) -> None:
    run_dir = model_package.parent
    message = fails_cleanly(["serve", str(run_dir), "--port", "1"])
    assert f"did you mean {model_package}?" in message


README = Path(__file__).resolve().parents[1] / "README.md"


def documented_mistakes() -> list[tuple[str, list[str]]]:
    """(command, the lines shown for it) pairs of the README's `console` block of mistakes."""
    block = README.read_text().split("### Every mistake is one `error:` line")[1].split("```console\n")[1]
    found: list[tuple[str, list[str]]] = []
    for line in block.split("```")[0].splitlines():
        if line.startswith("$ dlforge "):
            found.append((line[2:], []))
        else:
            found[-1][1].append(line)
    return found


def test_every_documented_mistake_is_one_error_line_exit_2(model_package: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs/digits").symlink_to(model_package.parent)  # a finished cnn_tiny run; nothing may change it
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"truncated")
    before = sorted((p.name, p.stat().st_mtime_ns) for p in model_package.parent.rglob("*"))
    mistakes = documented_mistakes()
    assert len(mistakes) >= 10
    for command, shown in mistakes:
        message = fails_cleanly(command.split()[1:])
        for line in shown:  # as printed, up to any "…"
            assert line.split("…")[0] in message, (command, message)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in model_package.parent.rglob("*")) == before
