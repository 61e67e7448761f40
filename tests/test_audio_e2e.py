"""Spoken digits end to end: synthesize a few clips → train → export (parity on real clips) → predict → serve."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from dlforge.audio_io import AudioFormat, load_clip
from dlforge.cli import app
from dlforge.config import parse_config
from dlforge.data.spoken_digits import GROUP_BY
from dlforge.export.package import export_run, load_package
from dlforge.serve.settings import Settings
from dlforge.train.run import train_run
from tests.audio_helpers import spoken_digits, tone, wav_bytes
from tests.serve_helpers import CHROMIUM, NO_CHROMIUM, artifacts_dir, browser_page, infer_body, running

pytestmark = pytest.mark.slow
RATE = 8000


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(clips folder, package) of a tiny audio CNN trained for one epoch on 4 voices × 10 digits."""
    root = tmp_path_factory.mktemp("spoken")
    clips = spoken_digits(root / "clips", voices=4, takes=1)
    cfg = parse_config({
        "name": "spoken", "seed": 0,
        "data": {"dataset": "audio_folder", "val_fraction": 0.25, "test_fraction": 0.25,
                 "params": {"path": str(clips), "sample_rate": RATE, "duration": 1.0, "group_by": GROUP_BY}},
        "model": {"arch": "audio_cnn_tiny", "params": {"sample_rate": RATE, "n_fft": 256, "hop": 80}},
        "augment": ["time_shift", {"gain": [-3, 3]}, {"noise": {"p": 1.0}}, "freq_mask", "time_mask"],
        "train": {"epochs": 1, "batch_size": 16, "progress": False},
        "eval": {"plots": False},
    })
    train_run(cfg, root / "run")
    return clips, export_run(root / "run")


def test_package_takes_raw_waveforms_and_passed_parity_on_real_clips(trained: tuple[Path, Path]) -> None:
    manifest = load_package(trained[1]).manifest
    assert manifest.inputs[0].shape == [-1, RATE] and manifest.inputs[0].datatype == "FP32"
    assert manifest.preprocessing.kind == "audio" and manifest.preprocessing.sample_rate == RATE
    assert manifest.onnx.parity_max_abs_diff < manifest.onnx.tolerance
    assert manifest.labels == sorted(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                                      "nine"])


def test_predict_serve_and_v2_infer_agree_on_a_wav(trained: tuple[Path, Path], tmp_path: Path) -> None:
    clips, package = trained
    clip = next((clips / "seven").glob("*.wav"))
    result = CliRunner().invoke(app, ["predict", str(package), str(clip), "--json", "--top-k", "10"])
    assert result.exit_code == 0, result.output
    predicted = {t["label"]: t["probability"] for t in json.loads(result.output)[0]["top"]}
    wave = load_clip(clip, AudioFormat(RATE, 1.0))  # what training made of it: 16 kHz → 8 kHz, padded
    with running(Settings(path=package)) as (url, _), httpx.Client(base_url=url, timeout=60) as client:
        upload = {"file": ("c.wav", clip.read_bytes(), "audio/wav")}
        r = client.post("/v2/models/spoken/classify?top_k=10", files=upload)
        assert r.status_code == 200, r.text
        served = {p["label"]: p["probability"] for p in r.json()["predictions"]}
        v2 = client.post("/v2/models/spoken/infer", json=infer_body(wave[None]))
        assert v2.status_code == 200, v2.text
        probs = next(o["data"] for o in v2.json()["outputs"] if o["name"] == "probabilities")
        stereo = client.post("/v2/models/spoken/classify", files={
            "file": ("s.wav", wav_bytes(np.stack([sf.read(clip)[0]] * 2, axis=1), 16000), "audio/wav")})
        assert stereo.status_code == 200  # mixed to mono, as the training data was
    labels = load_package(package).manifest.labels
    for label, p in predicted.items():
        assert served[label] == pytest.approx(p, abs=1e-5)
        assert probs[labels.index(label)] == pytest.approx(p, abs=1e-5)


@pytest.mark.serve
def test_unusable_uploads_get_a_clear_400(trained: tuple[Path, Path]) -> None:
    cases = {
        "not audio": b"hello, not a wav",
        "too long": wav_bytes(tone(300, 2.5, RATE), RATE),
        "outside 1000..384000 Hz": wav_bytes(tone(100, 0.5, 500), 500),
    }
    with running(Settings(path=trained[1])) as (url, _), httpx.Client(base_url=url, timeout=60) as client:
        for reason, body in cases.items():
            r = client.post("/v2/models/spoken/classify", files={"file": ("x.wav", body, "audio/wav")})
            assert r.status_code == 400 and reason in r.json()["error"], (reason, r.text)
            assert "<_io" not in r.text and " at 0x" not in r.text  # the rule, never internals (#29)
        wrong_length = client.post("/v2/models/spoken/infer", json=infer_body(np.zeros((1, 4000), np.float32)))
        assert wrong_length.status_code == 400
        assert client.get("/v2/health/ready").status_code == 200


def test_predict_refuses_a_clip_that_is_too_long(trained: tuple[Path, Path], tmp_path: Path) -> None:
    long = tmp_path / "long.wav"
    sf.write(long, tone(300, 3.0, RATE), RATE)
    result = CliRunner().invoke(app, ["predict", str(trained[1]), str(long)])
    assert result.exit_code == 2 and "too long" in result.output


@pytest.mark.serve
@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_the_playground_classifies_an_uploaded_wav_in_chromium(trained: tuple[Path, Path]) -> None:
    """The audio panel of the page: choose a WAV, hear it, see the label /classify gives for the same file."""
    from playwright.sync_api import expect

    clips, package = trained
    clip = next((clips / "three").glob("*.wav"))
    with running(Settings(path=package)) as (url, _):
        expected = httpx.post(f"{url}/v2/models/spoken/classify?top_k=5", timeout=60,
                              files={"file": ("c.wav", clip.read_bytes(), "audio/wav")}).json()["predictions"]
        with browser_page() as page:
            page.goto(f"{url}/playground/spoken")
            expect(page.locator("#audio-input")).to_be_visible()
            page.set_input_files("#audio-file", str(clip))
            expect(page.locator("#player")).to_be_visible()
            expect(page.locator("#topk li")).to_have_count(5)
            expect(page.locator("#topk li").first.locator(".label")).to_have_text(expected[0]["label"])
            page.screenshot(path=str(artifacts_dir() / "playground-audio.png"), full_page=True)
