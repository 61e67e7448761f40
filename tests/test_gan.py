"""task: gan end to end on digits: training through the shared loop, bitwise resume, report, export with
parity, `dlforge generate`, and the V2 server (seed or latent + class → images)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from dlforge.cli import app
from dlforge.config import ConfigError, parse_config
from dlforge.config.loading import dump_config
from dlforge.evaluate.report import evaluate_run
from dlforge.experiment import check_experiment
from dlforge.export.package import PackageError, export_run, load_package
from dlforge.serve.runtime import load_runtime
from dlforge.serve.settings import Settings
from dlforge.taskapi import TaskError
from dlforge.tasks.gan.generate import generate_images
from dlforge.tasks.gan.metrics import load_judge
from dlforge.train.checkpoint import list_checkpoints, load_checkpoint
from dlforge.train.run import train_run
from tests.conftest import tiny_config
from tests.serve_helpers import running

pytestmark = pytest.mark.slow


def gan_config(epochs: int = 2, **gan: Any) -> Any:
    return tiny_config(task="gan", model={"arch": "dcgan_generator_tiny"},
                       gan={"latent_dim": 8, "discriminator": {"arch": "dcgan_discriminator_tiny"},
                            "eval_samples": 200, "ema_decay": 0.9, **gan},
                       train={"epochs": epochs, "batch_size": 128, "scheduler": {"name": "none"}})


@pytest.fixture(scope="module")
def judge_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny digits classifier trained by dlforge: the GAN's judge."""
    run = tmp_path_factory.mktemp("judge") / "run"
    train_run(tiny_config(train={"epochs": 2}), run)
    return run


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory: pytest.TempPathFactory, judge_run: Path) -> Path:
    run = tmp_path_factory.mktemp("gan") / "run"
    cfg = gan_config(classifier=str(judge_run))
    cfg.eval.plots = True
    train_run(check_experiment(cfg), run)
    return run


def test_gan_config_mistakes_are_reported_at_load_time() -> None:
    with pytest.raises(ConfigError, match=r"gan.loss"):
        parse_config({"task": "gan", "gan": {"loss": "wasserstein"}})
    raw = {"task": "gan", "model": {"arch": "cnn_small"}, "train": {"precision": "fp16", "accumulate": 2}}
    with pytest.raises(ConfigError) as err:
        check_experiment(parse_config(raw))
    text = str(err.value)
    for expected in ("train.precision: fp16", "train.accumulate", "model.arch: 'cnn_small' is a classifier"):
        assert expected in text, text
    with pytest.raises(ConfigError, match=r"'unet' is a denoise model"):
        check_experiment(parse_config({"task": "gan", "model": {"arch": "unet"}}))


def test_gan_trains_and_writes_its_report(gan_run: Path) -> None:
    history = [json.loads(line) for line in (gan_run / "history.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in history] == [1, 2]
    for row in history:
        assert np.isfinite(row["train_d_loss"]) and np.isfinite(row["train_g_loss"]) and row["val_fid"] > 0
        assert 0 <= row["val_class_accuracy"] <= 1 and row["val_diversity"] > 0
    metrics = json.loads((gan_run / "metrics.json").read_text())
    expected = {"fid", "diversity", "class_accuracy", "samples", "judge", "untrained", "fid_ratio_to_untrained"}
    assert expected <= set(metrics)
    assert metrics["untrained"]["fid"] > 0 and metrics["untrained"]["class_accuracy"] is not None
    for name in ("report/samples.png", "report/learning_curves.png", "report/samples/epoch_0001.png",
                 "report/samples/epoch_0002.png"):
        assert (gan_run / name).is_file(), name
    checkpoint = load_checkpoint(list_checkpoints(gan_run / "checkpoints")[-1])[2]
    assert {"d_optimizer", "d_scheduler"} <= set(checkpoint["task"])  # both optimizers are resumable
    weights = load_file(str(gan_run / "model.safetensors"))
    assert any(k.startswith("ema.") for k in weights) and any(k.startswith("discriminator.") for k in weights)


def test_gan_resume_after_sigkill_is_bitwise_exact(tmp_path: Path) -> None:
    """Both optimizers, the EMA, its step count, spectral-norm vectors and the RNG come back from the checkpoint."""
    config = tmp_path / "gan.yaml"
    config.write_text(dump_config(gan_config(epochs=4)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # both runs alike: CPU kernels may differ with thread counts
    straight = [sys.executable, "-m", "dlforge", "train", str(config), "--out", str(tmp_path / "straight")]
    assert subprocess.run(straight, env=env, capture_output=True, timeout=240).returncode == 0
    command = [*straight[:-1], str(tmp_path / "killed")]
    victim = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list_checkpoints(tmp_path / "killed/checkpoints"):
        assert victim.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (tmp_path / "killed/model.safetensors").exists(), "the run finished before the kill"
    resumed = subprocess.run([*command, "--resume"], env=env, capture_output=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    straight, killed = (load_file(str(tmp_path / run / "model.safetensors")) for run in ("straight", "killed"))
    assert straight.keys() == killed.keys()
    assert all(torch.equal(straight[k], killed[k]) for k in straight)  # G, D, EMA, spectral-norm vectors


def test_gan_exports_generates_and_serves(gan_run: Path, tmp_path: Path) -> None:
    package = load_package(export_run(gan_run))
    manifest = package.manifest
    assert manifest.task == "gan" and manifest.onnx.parity_max_abs_diff <= manifest.onnx.tolerance
    assert [t.name for t in manifest.inputs] == ["latent", "class"] and manifest.outputs[0].shape == [-1, 1, 8, 8]
    images = generate_images(package, 20, None, seed=3)
    assert images.shape == (20, 1, 8, 8) and images.min() >= 0 and images.max() <= 1
    np.testing.assert_array_equal(images, generate_images(package, 20, None, seed=3))  # a seed names an image
    out = tmp_path / "grid.png"
    result = CliRunner().invoke(app, ["generate", str(package.root), "--n", "16", "--class", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file()
    bad = CliRunner().invoke(app, ["generate", str(package.root), "--class", "12"])
    assert bad.exit_code == 2 and "--class: 12 is out of range" in bad.output and "Traceback" not in bad.output
    with pytest.raises(PackageError, match="between 1 and 1024"):
        generate_images(package, 5000, None, seed=0)
    with pytest.raises(TaskError, match="--runtime torch does not serve task gan packages"):
        load_runtime("torch", package, 1)

    with running(Settings(path=package.root, grpc_port=0)) as (url, app_):
        infer = f"{url}/v2/models/{manifest.name}/infer"
        meta = httpx.get(f"{url}/v2/models/{manifest.name}").json()
        assert [t["name"] for t in meta["inputs"]] == ["latent", "seed", "class"]
        by_seed = httpx.post(infer, json={"inputs": [
            {"name": "seed", "datatype": "INT64", "shape": [2], "data": [3, 4]},
            {"name": "class", "datatype": "INT64", "shape": [2], "data": [0, 1]}]})
        assert by_seed.status_code == 200, by_seed.text
        served = np.array(by_seed.json()["outputs"][0]["data"], np.float32).reshape(2, 1, 8, 8)
        # seeds 3 and 4 with classes 0 and 1: what `dlforge generate --n 2 --seed 3` makes
        np.testing.assert_allclose(served, generate_images(package, 2, None, seed=3), atol=1e-6)
        for body, message in [
            ({"inputs": [{"name": "seed", "datatype": "INT64", "shape": [1], "data": [0]},
                         {"name": "class", "datatype": "INT64", "shape": [1], "data": [10]}]}, "out of range"),
            ({"inputs": [{"name": "class", "datatype": "INT64", "shape": [1], "data": [1]}]}, "exactly one of"),
            ({"inputs": [{"name": "latent", "datatype": "FP32", "shape": [1, 5], "data": [0] * 5},
                         {"name": "class", "datatype": "INT64", "shape": [1], "data": [1]}]}, "shape"),
        ]:
            response = httpx.post(infer, json=body)
            assert response.status_code == 400 and message in response.json()["error"], response.text
        nan = httpx.post(infer, content=b'{"inputs": [{"name": "latent", "datatype": "FP32", "shape": [1, 8], '
                         b'"data": [NaN' + b', 0' * 7 + b']}, {"name": "class", "datatype": "INT64", "shape": [1], '
                         b'"data": [1]}]}')
        assert nan.status_code == 400 and "NaN" in nan.json()["error"], nan.text
        _check_grpc_seeds(app_.state.serve.grpc_port, manifest.name, manifest.outputs[0].name, served)


def _check_grpc_seeds(port: int, model: str, output: str, served: np.ndarray) -> None:
    """gRPC honours the codec's optional inputs as HTTP does: `seed` without `latent` (issue 16)."""
    import tritonclient.grpc as tc
    from tritonclient.utils import InferenceServerException

    def tensor(name: str, values: list[int]) -> tc.InferInput:
        t = tc.InferInput(name, [len(values)], "INT64")
        t.set_data_from_numpy(np.array(values, np.int64))
        return t

    client = tc.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        result = client.infer(model, [tensor("seed", [3, 4]), tensor("class", [0, 1])])
        np.testing.assert_allclose(result.as_numpy(output), served, atol=1e-6)
        with pytest.raises(InferenceServerException) as err:
            client.infer(model, [tensor("class", [1])])
        assert str(err.value.status()) == "StatusCode.INVALID_ARGUMENT" and "exactly one of" in str(err.value.message())
    finally:
        client.close()


def test_the_judge_is_needed_to_train_but_not_to_export(gan_run: Path, tmp_path: Path) -> None:
    """Training evaluates every epoch, so a missing classifier stops it before epoch 1; export, generate and
    serving never judge samples, so a run whose classifier was since moved still exports."""
    with pytest.raises(ConfigError, match="gan.classifier"):
        train_run(gan_config(classifier=str(tmp_path / "gone")), tmp_path / "refused")
    assert not list_checkpoints(tmp_path / "refused" / "checkpoints")
    moved = tmp_path / "moved"
    shutil.copytree(gan_run, moved, ignore=shutil.ignore_patterns("package"))
    config = yaml.safe_load((moved / "config.yaml").read_text())
    config["gan"]["classifier"] = str(tmp_path / "gone")
    (moved / "config.yaml").write_text(yaml.safe_dump(config))
    package = load_package(export_run(moved))
    assert generate_images(package, 4, None, seed=0).shape == (4, 1, 8, 8)


def test_a_classifier_package_judges_like_its_run_directory(judge_run: Path, tmp_path: Path) -> None:
    """docs/generative.md: `gan.classifier` may name a classifier's package; it is rebuilt from the package's own
    recipe (config.yaml, run.json, model.safetensors) and scores exactly as the run directory it came from."""
    package = export_run(judge_run, out=tmp_path / "judge_package")
    run = tmp_path / "run"
    metrics = train_run(check_experiment(gan_config(epochs=1, classifier=str(package))), run)
    assert metrics["judge"] == str(package) and 0 <= metrics["class_accuracy"] <= 1 and metrics["fid"] > 0
    by_run_dir = tmp_path / "by_run_dir"
    shutil.copytree(run, by_run_dir)
    config = yaml.safe_load((by_run_dir / "config.yaml").read_text())
    config["gan"]["classifier"] = str(judge_run)
    (by_run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    packaged, direct = evaluate_run(run), evaluate_run(by_run_dir)
    assert (packaged["judge"], direct["judge"]) == (str(package), str(judge_run))
    for name in ("fid", "class_accuracy", "diversity"):
        assert packaged[name] == direct[name] == metrics[name], name


def test_a_judge_that_does_not_fit_is_refused_with_the_reason(judge_run: Path, gan_run: Path, tmp_path: Path) -> None:
    package = export_run(judge_run, out=tmp_path / "judge_package")
    digits = [str(i) for i in range(10)]
    with pytest.raises(ConfigError, match=r"gan.classifier: .* was trained on inputs \(1, 8, 8\) and 10 "
                                          r"labels \[0, 1, .*but this data has \(1, 16, 16\) and 10 labels"):
        load_judge(str(package), (1, 16, 16), digits)
    with pytest.raises(ConfigError, match=r"but this data has \(1, 8, 8\) and 10 labels \[a, b, c, 3,"):
        load_judge(str(package), (1, 8, 8), ["a", "b", "c", *digits[3:]])
    with pytest.raises(ConfigError, match=r"gan.classifier: .* is a 'gan' package, not a classifier"):
        load_judge(str(export_run(gan_run, out=tmp_path / "gan_package")), (1, 8, 8), digits)
    with pytest.raises(ConfigError, match=r"gan.classifier: .* is a 'gan' run, not a classifier"):
        load_judge(str(gan_run), (1, 8, 8), digits)
    old = tmp_path / "old_package"  # exported before packages carried run.json
    shutil.copytree(package, old)
    (old / "run.json").unlink()
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["files"]["run.json"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=r"gan.classifier: .*no run.json \(exported by an older dlforge\); re-export"):
        load_judge(str(old), (1, 8, 8), digits)
    tampered = tmp_path / "tampered"  # a package is hash-verified before its weights are used
    shutil.copytree(package, tampered)
    with (tampered / "model.safetensors").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ConfigError, match=r"gan.classifier: .*model.safetensors: sha256/size mismatch"):
        load_judge(str(tampered), (1, 8, 8), digits)
    assert load_judge(str(package), (1, 8, 8), digits).source == str(package)


@pytest.mark.distributed
@pytest.mark.timeout(600)
def test_gan_trains_under_two_workers(tmp_path: Path) -> None:
    """DDP over the generator+discriminator pair: each pass leaves one side unused (find_unused_parameters)."""
    from tests.test_dist import finish, launch, write_config

    raw = {"name": "gan2", "task": "gan", "data": {"dataset": "digits"}, "model": {"arch": "dcgan_generator_tiny"},
           "gan": {"latent_dim": 8, "discriminator": {"arch": "dcgan_discriminator_tiny"}, "eval_samples": 128},
           "train": {"epochs": 2, "batch_size": 64, "progress": False, "scheduler": {"name": "none"}},
           "eval": {"plots": False}, "export": {"enabled": False}}
    code, stderr = finish(launch(write_config(tmp_path, raw), tmp_path / "run", "--nproc", "2"), timeout=600)
    assert code == 0, stderr
    history = [json.loads(line) for line in (tmp_path / "run/history.jsonl").read_text().splitlines()]
    assert len(history) == 2 and all(np.isfinite(row["train_d_loss"]) for row in history)
    assert (tmp_path / "run/model.safetensors").is_file()
