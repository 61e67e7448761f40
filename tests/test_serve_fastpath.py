"""The infer fast path answers exactly as the routed FastAPI app does: same status, headers and bytes.

One app, one event loop: the TestClient drives the fast path (the app `create_app` returns) and, through
its portal, the routed app behind it, so both share the loaded models and batchers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from starlette.testclient import TestClient

from dlforge.serve.app import create_app
from dlforge.serve.fastpath import infer_target
from dlforge.serve.settings import Settings
from tests.serve_helpers import binary_body, infer_body

pytestmark = pytest.mark.serve
TOKEN = "s3cret"
HEADERS_COMPARED = ("content-type", "content-length", "retry-after", "www-authenticate", "connection",
                    "inference-header-content-length")


@pytest.fixture(scope="module")
def client(model_package: Path) -> Iterator[TestClient]:
    settings = Settings(path=model_package, tokens=(TOKEN,), max_body_bytes=64 << 10)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as c:
        yield c


async def _routed(app: Any, path: str, content: bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
        return await c.post(path, content=content, headers=headers)


def _both(client: TestClient, path: str, content: bytes, headers: dict[str, str]) -> tuple[Any, Any]:
    fast = client.post(path, content=content, headers=headers)
    routed = client.portal.call(_routed, client.app.app, path, content, headers)  # type: ignore[union-attr]
    return fast, routed


AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
X = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


CASES: dict[str, tuple[str, bytes, dict[str, str]]] = {
    "json": ("/v2/models/tiny/infer", _json(infer_body(X, id="r1")), AUTH),
    "versioned": ("/v2/models/tiny/versions/1/infer", _json(infer_body(X)), AUTH),
    "binary out": ("/v2/models/tiny/infer",
                   _json(infer_body(X, outputs=[{"name": "logits", "parameters": {"binary_data": True}}])), AUTH),
    "binary in": ("/v2/models/tiny/infer", binary_body(X)[0], {**AUTH, **binary_body(X)[1]}),
    "bad json": ("/v2/models/tiny/infer", b"{not json", AUTH),
    "wrong datatype": ("/v2/models/tiny/infer", _json({"inputs": [{"name": "input", "shape": [1, 1, 8, 8],
                                                                  "datatype": "INT8", "data": [0] * 64}]}), AUTH),
    "unknown output": ("/v2/models/tiny/infer", _json(infer_body(X, outputs=[{"name": "nope"}])), AUTH),
    "unknown model": ("/v2/models/nope/infer", _json(infer_body(X)), AUTH),
    "unknown version": ("/v2/models/tiny/versions/9/infer", _json(infer_body(X)), AUTH),
    "no token": ("/v2/models/tiny/infer", _json(infer_body(X)), {"Content-Type": "application/json"}),
    "wrong token": ("/v2/models/tiny/infer", _json(infer_body(X)), {**AUTH, "Authorization": "Bearer wrong"}),
    "too large": ("/v2/models/tiny/infer", b" " * (65 << 10), AUTH),
    "bad header length": ("/v2/models/tiny/infer", b"{}", {**AUTH, "Inference-Header-Content-Length": "x"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_fast_path_answers_like_the_routed_app(client: TestClient, case: str) -> None:
    path, content, headers = CASES[case]
    fast, routed = _both(client, path, content, headers)
    assert fast.status_code == routed.status_code, (fast.text, routed.text)
    assert fast.content == routed.content
    assert {h: fast.headers.get(h) for h in HEADERS_COMPARED} == {h: routed.headers.get(h) for h in HEADERS_COMPARED}


def test_the_cases_cover_success_and_every_error_status(client: TestClient) -> None:
    statuses = {client.post(path, content=content, headers=headers).status_code
                for path, content, headers in CASES.values()}
    assert statuses == {200, 400, 401, 403, 404, 413}


def test_only_infer_paths_take_the_fast_path() -> None:
    assert infer_target("/v2/models/tiny/infer") == ("tiny", None)
    assert infer_target("/v2/models/tiny/versions/2/infer") == ("tiny", "2")
    for other in ("/v2/models/tiny", "/v2/models//infer", "/v2/models/tiny/infer/", "/v2/models/a/b/infer",
                  "/v2/models/tiny/versions//infer", "/v3/models/tiny/infer", "/v2/models/tiny/classify"):
        assert infer_target(other) is None, other


@pytest.mark.parametrize("access_log", [True, False])
def test_one_access_line_per_request_unless_turned_off(model_package: Path, access_log: bool,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(path=model_package, access_log=access_log)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as c, \
            caplog.at_level("INFO", logger="dlforge.serve.access"):
        assert c.post("/v2/models/tiny/infer", json=infer_body(X)).status_code == 200  # the fast path
        assert c.get("/v2/health/live").status_code == 200  # the routed app
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "dlforge.serve.access"]
    if not access_log:
        assert lines == []
        return
    assert [(line["method"], line["path"], line["status"]) for line in lines] == [
        ("POST", "/v2/models/tiny/infer", 200), ("GET", "/v2/health/live", 200)]
