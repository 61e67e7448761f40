"""task: denoise end to end on digits: noise models, PSNR/SSIM beside the noisy input's, report, export with
parity, `dlforge predict` writing denoised PNGs, and the V2 server (image → image)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dlforge.cli import app
from dlforge.config import ConfigError, parse_config
from dlforge.experiment import check_experiment
from dlforge.export.package import export_run, load_package
from dlforge.serve.settings import Settings
from dlforge.train.run import train_run
from tests.conftest import tiny_config
from tests.serve_helpers import running

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def denoise_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("denoise") / "run"
    cfg = tiny_config(task="denoise", model={"arch": "unet", "params": {"width": 8, "depth": 1}},
                      denoise={"noise": [{"gaussian": 0.3}]}, eval={"plots": True},
                      train={"epochs": 4, "optimizer": {"lr": 0.01}})
    train_run(check_experiment(cfg), run)
    return run


def test_denoise_config_mistakes_are_reported_at_load_time() -> None:
    raw = {"task": "denoise", "model": {"arch": "cnn_small"}, "denoise": {"noise": [{"gausian": 0.3}]},
           "export": {"quantize": "int8"}}
    with pytest.raises(ConfigError) as err:
        check_experiment(parse_config(raw))
    text = str(err.value)
    for expected in ("model.arch: 'cnn_small' does not map images to images", "did you mean 'gaussian'",
                     "export.quantize"):
        assert expected in text, text
    with pytest.raises(ConfigError, match=r"data.dataset: .synthetic. is a dataset for classification, not denoise"):
        check_experiment(parse_config({"task": "denoise", "model": {"arch": "unet"},
                                       "data": {"dataset": "synthetic", "params": {"shape": [12]}}}))


def test_denoiser_beats_its_noisy_input_and_reports_both(denoise_run: Path) -> None:
    metrics = json.loads((denoise_run / "metrics.json").read_text())
    assert {"psnr", "ssim", "psnr_noisy", "ssim_noisy", "psnr_gain"} <= set(metrics)
    # sigma 0.3 on digits: the noisy input sits near 11 dB; even 4 tiny epochs gain several dB
    assert metrics["psnr"] > metrics["psnr_noisy"] + 2 and metrics["ssim"] > metrics["ssim_noisy"]
    history = [json.loads(line) for line in (denoise_run / "history.jsonl").read_text().splitlines()]
    assert history[-1]["val_psnr_noisy"] == history[0]["val_psnr_noisy"]  # fixed validation noise
    assert (denoise_run / "report/examples.png").is_file() and (denoise_run / "report/learning_curves.png").is_file()


def test_denoiser_exports_predicts_and_serves(denoise_run: Path, tmp_path: Path) -> None:
    package = load_package(export_run(denoise_run))
    manifest = package.manifest
    assert manifest.task == "denoise" and manifest.onnx.parity_max_abs_diff <= manifest.onnx.tolerance
    assert manifest.inputs[0].shape == manifest.outputs[0].shape == [-1, 1, 8, 8]
    noisy = np.clip(np.random.default_rng(0).normal(0.5, 0.3, (8, 8)), 0, 1)
    Image.fromarray((noisy * 255).astype(np.uint8), mode="L").save(tmp_path / "noisy.png")
    result = CliRunner().invoke(app, ["predict", str(package.root), str(tmp_path / "noisy.png"),
                                      "--out", str(tmp_path / "clean")])
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "clean/noisy.denoised.png").size == (8, 8)
    text = CliRunner().invoke(app, ["predict", str(package.root), "--text", "hi"])  # not a silent exit 0
    assert text.exit_code == 2 and "this model (task denoise) takes images" in text.output

    with running(Settings(path=package.root)) as (url, _):
        infer = f"{url}/v2/models/{manifest.name}/infer"
        x = np.random.default_rng(1).random((3, 1, 8, 8), dtype=np.float32)
        body = {"inputs": [{"name": "image", "datatype": "FP32", "shape": [3, 1, 8, 8], "data": x.ravel().tolist()}]}
        response = httpx.post(infer, json=body)
        assert response.status_code == 200, response.text
        out = response.json()["outputs"][0]
        assert out["name"] == "denoised" and out["shape"] == [3, 1, 8, 8]
        assert min(out["data"]) >= 0 and max(out["data"]) <= 1
        wrong = {"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 1, 4, 4], "data": [0.5] * 16}]}
        response = httpx.post(infer, json=wrong)
        assert response.status_code == 400 and "shape" in response.json()["error"]
