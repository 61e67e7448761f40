"""The playground: its routes over HTTP, and the page itself in a real headless Chromium.

The browser test uses Debian's chromium (`.ci/run` installs it) driven by Playwright, never a browser
Playwright downloads. It types the token, uploads a real digit and draws another on the canvas, and
checks the labels the page shows against the engine's own answer for the same pixels. A screenshot
goes to test-artifacts/ (or $DLFORGE_TEST_ARTIFACTS).
"""

from __future__ import annotations

import functools
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

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
