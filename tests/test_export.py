"""Export → package → load: hashes, schema, parity, dynamic axes, int8, token models."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch

from dlforge.config import ModelConfig
from dlforge.export.onnx import check_parity, export_onnx, input_dims, run_onnx, session
from dlforge.export.package import (
    ExportError,
    Manifest,
    PackageError,
    export_run,
    load_package,
)
from dlforge.nn import build_model
from dlforge.rundir import load_run
from dlforge.train.run import train_run
from tests.conftest import tiny_config

SCHEMA = Path(__file__).parents[1] / "src" / "dlforge" / "export" / "manifest.schema.json"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("run")
    train_run(tiny_config(), path)
    return path


@pytest.fixture(scope="module")
def package(run_dir: Path) -> Path:
    return export_run(run_dir)


def _copy(package: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(package, tmp_path / "pkg"))


def test_checked_in_schema_matches_the_manifest_model() -> None:
    assert json.loads(SCHEMA.read_text()) == Manifest.model_json_schema()


def test_manifest_validates_against_its_schema(package: Path) -> None:
    manifest = json.loads((package / "manifest.json").read_text())
    jsonschema.validate(manifest, json.loads(SCHEMA.read_text()))
    assert manifest["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert [o["name"] for o in manifest["outputs"]] == ["logits", "probabilities"]
    assert set(manifest["files"]) == {"model.onnx", "model.safetensors", "config.yaml", "run.json"}
    assert manifest["onnx"]["parity_max_abs_diff"] <= 1e-4 and manifest["metrics"]["accuracy"] > 0


def test_load_package_verifies_and_exposes_paths(package: Path) -> None:
    pkg = load_package(package)
    assert pkg.onnx_path == package / "model.onnx" and pkg.int8_path is None
    assert pkg.manifest.labels == [str(i) for i in range(10)]
    with pytest.raises(PackageError, match="not a file of this package"):
        pkg.path("../run.json")


def test_tampered_onnx_is_refused(package: Path, tmp_path: Path) -> None:
    pkg = _copy(package, tmp_path)
    with (pkg / "model.onnx").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(PackageError, match=r"model\.onnx.*sha256"):
        load_package(pkg)


def test_missing_file_is_refused(package: Path, tmp_path: Path) -> None:
    pkg = _copy(package, tmp_path)
    (pkg / "model.safetensors").unlink()
    with pytest.raises(PackageError, match=r"model\.safetensors: missing"):
        load_package(pkg)


def test_unlisted_file_is_refused(package: Path, tmp_path: Path) -> None:
    pkg = _copy(package, tmp_path)
    (pkg / "evil.onnx").write_bytes(b"x")
    with pytest.raises(PackageError, match=r"evil\.onnx: not listed"):
        load_package(pkg)


@pytest.mark.parametrize("change", [{"format_version": 2}, {"surprise": 1}, {"files": {"../x": {"sha256": "a",
                                                                                             "bytes": 1}}}])
def test_bad_manifests_are_refused(package: Path, tmp_path: Path, change: dict) -> None:
    pkg = _copy(package, tmp_path)
    manifest = json.loads((pkg / "manifest.json").read_text())
    (pkg / "manifest.json").write_text(json.dumps({**manifest, **change}))
    with pytest.raises(PackageError, match="manifest.json"):
        load_package(pkg)


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_dynamic_batch_sizes(package: Path, run_dir: Path, batch: int) -> None:
    _, _, net = load_run(run_dir)
    x = torch.rand(batch, 1, 8, 8)
    logits, probs = run_onnx(session(package / "model.onnx"), x.numpy())
    assert logits.shape == (batch, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)
    with torch.no_grad():
        assert np.abs(logits - net(x).numpy()).max() < 1e-4


def test_parity_failure_raises_with_the_numbers(package: Path, run_dir: Path) -> None:
    _, _, net = load_run(run_dir)
    x = torch.rand(16, 1, 8, 8)
    with pytest.raises(ExportError, match=r"differs from torch by .*\(tolerance 0\)"):
        check_parity(net, package / "model.onnx", x, tolerance=0.0)
    with torch.no_grad():
        net.body[0].weight.add_(0.5)  # a model that no longer matches the exported graph
    with pytest.raises(ExportError, match="tolerance 0.0001"):
        check_parity(net, package / "model.onnx", x, tolerance=1e-4)


def test_token_model_has_dynamic_sequence_length(tmp_path: Path) -> None:
    cfg = tiny_config(data={"dataset": "synthetic", "params": {"shape": [12], "kind": "tokens", "n_samples": 128}},
                      model={"arch": "rnn_tiny", "params": {"cell": "gru", "vocab_size": 32}},
                      train={"epochs": 1})
    train_run(cfg, tmp_path / "run")
    pkg = load_package(export_run(tmp_path / "run", quantize="int8"))
    assert pkg.manifest.inputs[0].model_dump() == {"name": "input", "datatype": "INT64", "shape": [-1, -1]}
    assert pkg.manifest.quantized is not None and pkg.manifest.quantized.method.startswith("dynamic")
    _, _, net = load_run(tmp_path / "run")
    sess = session(pkg.onnx_path)
    for batch, steps in [(1, 5), (7, 12), (3, 30)]:
        x = torch.randint(0, 32, (batch, steps))
        logits, _ = run_onnx(sess, x.numpy())
        with torch.no_grad():
            assert np.abs(logits - net(x).numpy()).max() < 1e-4


def test_export_onnx_is_a_single_file(tmp_path: Path, run_dir: Path) -> None:
    _, _, net = load_run(run_dir)
    export_onnx(net, torch.rand(4, 1, 8, 8), tmp_path / "m.onnx", 18)
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_export_never_imports_train_or_serve() -> None:
    import ast

    for path in (SCHEMA.parent).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith(("dlforge.train", "dlforge.serve", "dlforge.cli")), path


def test_load_package_needs_no_torch(package: Path) -> None:
    """The server loads packages; verifying one must not drag in torch or onnx."""
    code = (f"import sys; from dlforge.export.package import load_package; load_package({str(package)!r}); "
            "assert 'torch' not in sys.modules and 'onnx' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(SCHEMA.parents[2])})


def _text_rnn() -> torch.nn.Module:
    cfg = ModelConfig(arch="text_rnn_tiny", params={"bidirectional": False})  # one GRU: half the export time
    return build_model(cfg, [24], 3, integer_input=True, pad_id=0, vocab_size=30).eval()


@pytest.mark.slow
def test_a_second_rnn_export_in_one_process_keeps_the_sequence_axis(tmp_path: Path) -> None:
    """torch's exporter cached the first export's RNN kernel and fixed the next graph's sequence axis to the
    example's length; every export must come out with both axes symbolic and run at any length."""
    torch.manual_seed(0)
    example = torch.randint(1, 30, (8, 24))
    example[:4, 10:] = 0  # right padding, as the text datasets write it
    for index in range(2):
        net, path = _text_rnn(), tmp_path / f"m{index}.onnx"
        export_onnx(net, example, path, 18, integer_input=True)
        assert input_dims(path) == ["batch", "sequence"]
        sess = session(path)
        for batch, steps in [(3, 5), (2, 40)]:
            x = torch.randint(1, 30, (batch, steps))
            logits, _ = run_onnx(sess, x.numpy())
            with torch.no_grad():
                assert np.abs(logits - net(x).numpy()).max() < 1e-4


def test_a_graph_fixed_to_the_example_length_is_refused(tmp_path: Path) -> None:
    """Flatten over the steps needs one length: the exporter fixes the axis, and we say so instead of shipping
    a manifest that promises any length."""
    cfg = ModelConfig(layers=[{"embedding": {"vocab_size": 30, "dim": 4}}, "flatten", {"dense": 3}])
    net = build_model(cfg, [6], 3, integer_input=True).eval()
    with pytest.raises(ExportError, match=r"fixed sequence \(axis 1\) = 6"):
        export_onnx(net, torch.randint(1, 30, (4, 6)), tmp_path / "m.onnx", 18, integer_input=True)
