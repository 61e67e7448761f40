"""The playground: its routes over HTTP, and the page itself in a real headless Chromium.

The browser test uses Debian's chromium (`.ci/run` installs it) driven by Playwright, never a browser
Playwright downloads. It types the token, uploads a real digit and draws another on the canvas, and
checks the labels the page shows against the engine's own answer for the same pixels. Then every task's
panel on a repository of prebuilt packages (tests/fixtures/packages_v0): image, text and audio classifiers,
translation, denoising, generation, and a model that failed to load. Screenshots go to test-artifacts/
(or $DLFORGE_TEST_ARTIFACTS).
"""

from __future__ import annotations

import functools
import io
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from dlforge.export.package import ModelPackage, load_package
from dlforge.serve.contract import Runtime
from dlforge.serve.images import preprocess_image
from dlforge.serve.runtime import load_runtime
from dlforge.serve.settings import Settings
from tests.serve_helpers import CHROMIUM, NO_CHROMIUM, artifacts_dir, browser_page, running

pytestmark = pytest.mark.serve
AUTH = {"Authorization": "Bearer secret"}



@pytest.fixture(scope="module")
def server(model_package: Path) -> Iterator[str]:
    with running(Settings(path=model_package, tokens=("secret",))) as (url, _):
        yield url


def test_page_and_assets_are_served_open_with_a_strict_policy(server: str) -> None:
    for path in ("/", "/playground/tiny"):
        page = httpx.get(server + path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert '<script src="/playground/assets/app.js"' in page.text
    script = httpx.get(f"{server}/playground/assets/app.js")
    assert script.headers["content-type"].startswith("text/javascript") and "/classify?top_k=5" in script.text
    missing = httpx.get(f"{server}/playground/assets/settings.py")
    assert missing.status_code == 404 and "no playground asset" in missing.json()["error"]


def test_model_list_and_card_need_the_token_and_describe_the_package(server: str, model_package: Path) -> None:
    assert httpx.get(f"{server}/v2/models").status_code == 401
    assert httpx.get(f"{server}/v2/models/tiny/card", headers={"Authorization": "Bearer x"}).status_code == 403
    assert httpx.get(f"{server}/v2/models", headers=AUTH).json() == {
        "models": [{"name": "tiny", "versions": ["1"], "ready": True}]}
    card = httpx.get(f"{server}/v2/models/tiny/versions/1/card", headers=AUTH).json()
    manifest = json.loads((model_package / "manifest.json").read_text())
    assert card["files"] == manifest["files"] and card["labels"] == [str(i) for i in range(10)]
    assert (card["name"], card["version"], card["versions"]) == ("tiny", "1", ["1"])
    assert card["preprocessing"]["kind"] == "image"
    matrix = card["metrics"]["confusion_matrix"]
    assert len(matrix) == 10 and sum(map(sum, matrix)) == card["metrics"]["samples"]
    missing = httpx.get(f"{server}/v2/models/tiny/versions/7/card", headers=AUTH)
    assert missing.status_code == 404 and "has no version '7'" in missing.json()["error"]


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@functools.cache
def _engine(package: Path) -> tuple[ModelPackage, Runtime]:
    loaded = load_package(package)
    return loaded, load_runtime("onnx", loaded, 1)


def _label(package: Path, png: bytes) -> str:
    """What the engine answers for this upload, through the server's own preprocessing."""
    loaded, runtime = _engine(package)
    batch = preprocess_image(png, loaded.manifest.preprocessing)
    probabilities = runtime.infer({"input": batch})["probabilities"][0]
    return loaded.manifest.labels[int(np.argmax(probabilities))]


def _digit_the_model_gets_right(package: Path) -> tuple[np.ndarray, str]:
    """A real test-set digit (8x8, 0..16) that the model classifies as its true label."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for image, target in zip(digits.images[-200:], digits.target[-200:], strict=True):
        if _label(package, _png(_gray(image))) == str(target):
            return image, str(target)
    raise AssertionError("the test model got none of 200 digits right")


def _gray(image: np.ndarray, scale: int = 1) -> Image.Image:
    pixels = np.round(image * 255 / 16).astype(np.uint8)
    return Image.fromarray(np.kron(pixels, np.ones((scale, scale), np.uint8)), "L")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_the_page_classifies_an_uploaded_and_a_drawn_digit_in_chromium(model_package: Path, server: str,
                                                                       tmp_path: Path) -> None:
    from playwright.sync_api import expect

    image, label = _digit_the_model_gets_right(model_package)
    upload = tmp_path / "digit.png"
    upload.write_bytes(_png(_gray(image)))
    drawn = _label(model_package, _png(_gray(image, scale=35).convert("RGBA")))  # what the 280x280 canvas sends
    manifest = json.loads((model_package / "manifest.json").read_text())
    with browser_page() as page:
        page.goto(f"{server}/playground/tiny")
        expect(page.locator("#status")).to_contain_text("401")  # asks for the token before anything else
        page.fill("#token", "secret")
        page.press("#token", "Enter")
        expect(page.locator("#card")).to_contain_text("tiny")
        expect(page.locator("#files")).to_contain_text(manifest["files"]["model.onnx"]["sha256"])
        expect(page.locator("#metrics")).to_contain_text("accuracy")
        expect(page.locator("#confusion")).to_be_visible()

        page.set_input_files("#image-file", str(upload))
        expect(page.locator("#topk li")).to_have_count(5)
        expect(page.locator("#topk li").first.locator(".label")).to_have_text(label)
        expect(page.locator("#latency")).to_have_text(re.compile(r"round trip \d+\.\d ms"))

        page.evaluate("() => document.getElementById('topk').replaceChildren()")
        page.evaluate(_DRAW, image.tolist())
        page.click("#classify-drawing")
        expect(page.locator("#topk li").first.locator(".label")).to_have_text(drawn)
        assert page.locator("#status").inner_text() == ""
        page.screenshot(path=str(artifacts_dir() / "playground.png"), full_page=True)


# Paints an 8x8 digit (values 0..16) onto the 280x280 canvas as 35-pixel gray squares: the same pixels the
# test renders with PIL, so the label the page shows can be predicted exactly.
_DRAW = """(image) => {
  const ctx = document.getElementById('draw').getContext('2d');
  image.forEach((row, i) => row.forEach((value, j) => {
    const v = Math.round(value * 255 / 16);
    ctx.fillStyle = `rgb(${v}, ${v}, ${v})`;
    ctx.fillRect(j * 35, i * 35, 35, 35);
  }));
}"""


# --- every task has its panel, and the page opens on a ready model (#29) ---------------------------------

V0 = Path(__file__).parent / "fixtures" / "packages_v0"  # one prebuilt package per task kind, no training
PANELS = {"digits_cnn": "digits", "langid_rnn": "langid", "tones": "tones", "num2words": "num2words",
          "denoise": "denoise", "dcgan": "dcgan"}


@pytest.fixture(scope="module")
def every_task(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One repository: a package of each task kind, and `a_broken` (a tampered graph: it fails to load and
    sorts first, where the page used to open)."""
    root = tmp_path_factory.mktemp("every-task") / "repo"
    for folder, name in PANELS.items():
        shutil.copytree(V0 / folder, root / name / "1")
    shutil.copytree(V0 / "digits_cnn", root / "a_broken" / "1")
    with (root / "a_broken" / "1" / "model.onnx").open("ab") as graph:
        graph.write(b"tampered")
    with running(Settings(path=root)) as (url, _):
        yield url


def test_the_model_list_says_which_models_are_ready(every_task: str) -> None:
    listed = {m["name"]: m["ready"] for m in httpx.get(f"{every_task}/v2/models").json()["models"]}
    assert listed == {"a_broken": False, **dict.fromkeys(PANELS.values(), True)}
    for name in ("/", "/playground/dcgan"):
        assert httpx.get(every_task + name).status_code == 200
    assert httpx.get(f"{every_task}/playground/assets/images.js").headers["content-type"].startswith("text/javascript")


def _open(page: Any, url: str, model: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{url}/playground/{model}")
    expect(page.locator("#card")).to_contain_text(model)
    assert page.locator("#status").inner_text() == ""


def _shot(page: Any, name: str) -> None:
    page.screenshot(path=str(artifacts_dir() / f"playground-panel-{name}.png"), full_page=True)


def _digit_png(tmp_path: Path, index: int = -1) -> Path:
    from sklearn.datasets import load_digits

    path = tmp_path / "digit.png"
    path.write_bytes(_png(_gray(load_digits().images[index])))
    return path


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_the_page_opens_on_a_ready_model_in_chromium(every_task: str) -> None:
    from playwright.sync_api import expect

    with browser_page() as page:
        page.goto(every_task + "/")
        expect(page.locator("#card")).to_contain_text("dcgan")  # the first ready one, not a_broken
        assert page.locator("#model option[value=a_broken]").is_disabled()
        assert "not ready" in page.locator("#model option[value=a_broken]").inner_text()
        page.goto(f"{every_task}/playground/a_broken")
        expect(page.locator("#status")).to_have_text("model 'a_broken' is not ready; showing 'dcgan'")
        expect(page.locator("#generate-input")).to_be_visible()
        _shot(page, "not-ready")


def _classify_like_the_server(url: str, model: str, **kwargs: Any) -> str:
    reply = httpx.post(f"{url}/v2/models/{model}/classify?top_k=5", timeout=30, **kwargs)
    assert reply.status_code == 200, reply.text
    return str(reply.json()["predictions"][0]["label"])


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_the_classifier_panels_label_an_image_a_text_and_a_clip_in_chromium(every_task: str, tmp_path: Path) -> None:
    import soundfile as sf
    from playwright.sync_api import expect

    digit = _digit_png(tmp_path)
    clip = tmp_path / "clip.wav"
    sf.write(clip, 0.5 * np.sin(2 * np.pi * 300 * np.arange(4000) / 8000).astype(np.float32), 8000)
    with browser_page() as page:
        _open(page, every_task, "digits")
        expect(page.locator("#classify-drawing")).to_have_text("Classify drawing")
        page.set_input_files("#image-file", str(digit))
        expect(page.locator("#topk li")).to_have_count(5)
        expect(page.locator("#topk li").first.locator(".label")).to_have_text(
            _classify_like_the_server(every_task, "digits", files={"file": digit.read_bytes()}))
        _shot(page, "image-classifier")

        _open(page, every_task, "langid")
        expect(page.locator("#text-input")).to_be_visible()
        page.fill("#text", "buongiorno a tutti")
        page.click("#classify-text")
        expect(page.locator("#topk li").first.locator(".label")).to_have_text(
            _classify_like_the_server(every_task, "langid", data={"text": "buongiorno a tutti"}))
        _shot(page, "text-classifier")

        _open(page, every_task, "tones")
        expect(page.locator("#audio-input")).to_be_visible()
        page.set_input_files("#audio-file", str(clip))
        expect(page.locator("#topk li")).to_have_count(2)
        expect(page.locator("#topk li").first.locator(".label")).to_have_text(
            _classify_like_the_server(every_task, "tones", files={"file": clip.read_bytes()}))
        _shot(page, "audio-classifier")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_the_translation_panel_translates_each_line_in_chromium(every_task: str) -> None:
    from playwright.sync_api import expect

    lines = ["12", "7", "305"]
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [3], "data": lines}]}
    expected = httpx.post(f"{every_task}/v2/models/num2words/infer", json=body, timeout=60).json()["outputs"][0]["data"]
    with browser_page() as page:
        _open(page, every_task, "num2words")
        expect(page.locator("#classify-text")).to_have_text("Translate")
        page.fill("#text", "\n".join(lines))
        page.click("#classify-text")
        expect(page.locator("#topk .translation")).to_have_text(expected)
        _shot(page, "translation")


def _infer_from_page(page: Any, click: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Click, and return the V2 request the page sent and the answer it got."""
    with page.expect_response(lambda r: r.url.endswith("/infer")) as answer:
        page.click(click)
    response = answer.value
    assert response.status == 200, response.text()
    return response.request.post_data_json, response.json()


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_the_denoise_panel_turns_an_image_into_an_image_in_chromium(every_task: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    digit = _digit_png(tmp_path)
    package = load_package(V0 / "denoise")
    with browser_page() as page:
        _open(page, every_task, "denoise")
        expect(page.locator("#classify-drawing")).to_have_text("Denoise drawing")  # never "classify" (#29)
        page.fill("#noise", "0")
        with page.expect_response(lambda r: r.url.endswith("/infer")) as answer:
            page.set_input_files("#image-file", str(digit))
        sent = answer.value.request.post_data_json["inputs"][0]
        # an 8x8 upload reaches the model as the server's own decoder would give it
        want = preprocess_image(digit.read_bytes(), package.manifest.preprocessing)
        assert sent["shape"] == [1, 1, 8, 8] and np.abs(np.asarray(sent["data"]) - want.ravel()).max() < 1e-6
        expect(page.locator("#denoised")).to_be_visible()
        assert answer.value.json()["outputs"][0]["shape"] == [1, 1, 8, 8]

        page.fill("#noise", "0.3")
        page.evaluate(_DRAW, _digit_image().tolist())
        request, reply = _infer_from_page(page, "#classify-drawing")
        again = httpx.post(f"{every_task}/v2/models/denoise/infer", json=request, timeout=30).json()
        assert reply["outputs"][0]["data"] == again["outputs"][0]["data"]  # what the page drew is the model's answer
        assert page.locator("#status").inner_text() == "" and page.locator("#denoise-out").bounding_box()["width"] > 100
        _shot(page, "denoise")


def _digit_image() -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().images[-1]


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_the_gan_panel_generates_a_grid_from_seeds_and_a_class_in_chromium(every_task: str) -> None:
    from playwright.sync_api import expect

    with browser_page() as page:
        _open(page, every_task, "dcgan")
        expect(page.locator("#class option")).to_have_count(11)  # each class in turn, then the 10 labels
        page.fill("#seed", "3")
        page.fill("#count", "8")
        page.select_option("#class", "7")
        request, reply = _infer_from_page(page, "#generate")
        assert request["inputs"] == [{"name": "seed", "datatype": "INT64", "shape": [8], "data": list(range(3, 11))},
                                     {"name": "class", "datatype": "INT64", "shape": [8], "data": [7] * 8}]
        assert reply["outputs"][0]["shape"] == [8, 1, 8, 8]
        expect(page.locator("#grid")).to_be_visible()
        assert page.locator("#grid").bounding_box()["width"] > 200
        page.select_option("#class", "-1")
        request, _ = _infer_from_page(page, "#generate")
        assert request["inputs"][1]["data"] == list(range(8))
        _shot(page, "gan")
