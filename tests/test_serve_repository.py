"""The model repository over HTTP: versions, default version, load/unload under traffic."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import pytest

from dlforge.serve.settings import Settings
from tests.serve_helpers import infer_body, make_repository, running

pytestmark = pytest.mark.serve
ADMIN = {"Authorization": "Bearer admin"}


@pytest.fixture(scope="module")
def repo(model_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repository(model_package, tmp_path_factory.mktemp("repo"), {"digits": ["1", "2"], "other": ["1"]})


def body() -> dict:
    return infer_body(np.zeros((1, 1, 8, 8), np.float32))


def test_two_versions_default_is_the_highest(repo: Path) -> None:
    with running(Settings(path=repo, admin_token="admin")) as (url, _), httpx.Client(base_url=url) as c:
        assert c.get("/v2/models/digits").json()["versions"] == ["1", "2"]
        assert c.post("/v2/models/digits/infer", json=body()).json()["model_version"] == "2"
        assert c.post("/v2/models/digits/versions/1/infer", json=body()).json()["model_version"] == "1"
        assert c.get("/v2/models/digits/versions/1/ready").status_code == 200
        assert c.get("/v2/models/digits/versions/3").status_code == 404
        index = c.post("/v2/repository/index", headers=ADMIN).json()
        assert [(i["name"], i["version"], i["state"]) for i in index] == [
            ("digits", "1", "READY"), ("digits", "2", "READY"), ("other", "1", "READY")]


def test_load_and_unload_under_traffic_fail_no_request(repo: Path) -> None:
    async def scenario(url: str) -> list[int]:
        statuses: list[int] = []
        stop = asyncio.Event()
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:

            async def traffic() -> None:
                while not stop.is_set():
                    statuses.append((await c.post("/v2/models/digits/infer", json=body())).status_code)

            workers = [asyncio.create_task(traffic()) for _ in range(4)]
            for _ in range(3):  # reload digits (swap) and unload/load the other model meanwhile
                assert (await c.post("/v2/repository/models/digits/load", headers=ADMIN)).status_code == 200
                assert (await c.post("/v2/repository/models/other/unload", headers=ADMIN)).status_code == 200
                gone = await c.post("/v2/models/other/infer", json=body())
                assert gone.status_code == 503 and gone.headers["retry-after"]
                assert (await c.post("/v2/repository/models/other/load", headers=ADMIN)).status_code == 200
            stop.set()
            await asyncio.gather(*workers)
            assert (await c.post("/v2/repository/models/nope/load", headers=ADMIN)).status_code == 404
        return statuses

    with running(Settings(path=repo, admin_token="admin")) as (url, _):
        statuses = asyncio.run(scenario(url))
    assert len(statuses) > 20 and set(statuses) == {200}


def test_repository_index_with_invalid_json_is_400(repo: Path) -> None:
    with running(Settings(path=repo, admin_token="admin")) as (url, _), httpx.Client(base_url=url) as c:
        for bad in (b"{not json", b'{"ready": "maybe"}', b"[1, 2]"):
            r = c.post("/v2/repository/index", content=bad, headers=ADMIN)
            assert r.status_code == 400 and "invalid repository index request" in r.json()["error"]
        assert c.post("/v2/repository/index", json={"ready": True}, headers=ADMIN).status_code == 200
        assert c.get("/v2/health/live").status_code == 200


def test_a_package_that_fails_to_load_is_a_400_naming_the_problem(
    model_package: Path, tmp_path: Path
) -> None:
    root = make_repository(model_package, tmp_path / "repo", {"digits": ["1"]})
    with running(Settings(path=root, admin_token="admin")) as (url, _), httpx.Client(base_url=url) as c:
        make_repository(model_package, root, {"broken": ["1"]})
        (root / "broken" / "1" / "model.onnx").write_bytes(b"not an onnx graph")
        r = c.post("/v2/repository/models/broken/load", headers=ADMIN)
        assert r.status_code == 400, r.text
        assert "failed to load model 'broken'" in r.json()["error"]
        index = {i["name"]: i for i in c.post("/v2/repository/index", headers=ADMIN).json()}
        assert index["broken"]["state"] == "UNAVAILABLE" and "load failed" in index["broken"]["reason"]
        assert c.get("/v2/health/live").status_code == 200  # the server stays up and keeps serving
        assert c.post("/v2/models/digits/infer", json=body()).status_code == 200
        assert c.post("/v2/models/broken/infer", json=body()).status_code == 503


def test_a_server_restricted_to_one_model_serves_all_its_versions_and_nothing_else(repo: Path) -> None:
    # What each Ray Serve replica runs (Settings.models): one model of the repository.
    with running(Settings(path=repo, models=("digits",), admin_token="admin")) as (url, _), \
            httpx.Client(base_url=url) as c:
        assert c.get("/v2/models/digits").json()["versions"] == ["1", "2"]
        assert c.post("/v2/models/digits/infer", json=body()).json()["model_version"] == "2"
        missing = c.post("/v2/models/other/infer", json=body())
        assert missing.status_code == 404 and missing.json() == {"error": "unknown model 'other' (models: digits)"}
        index = c.post("/v2/repository/index", headers=ADMIN).json()
        assert [(i["name"], i["version"]) for i in index] == [("digits", "1"), ("digits", "2")]
