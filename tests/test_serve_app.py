"""The V2 server end to end: a real uvicorn server on 127.0.0.1, a real exported package.

One module-scoped server answers most tests; tests that need other settings start their own.
"""

from __future__ import annotations

import asyncio
import io
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from dlforge.serve.protocol import HEADER_LENGTH, parse_response_body
from dlforge.serve.settings import Settings
from tests.serve_helpers import binary_body, infer_body, running

pytestmark = pytest.mark.serve
RNG = np.random.default_rng(0)
INFER = "/v2/models/tiny/infer"


@pytest.fixture(scope="module")
def server(model_package: Path) -> Iterator[tuple[str, Any]]:
    settings = Settings(path=model_package, max_batch_size=16, max_queue_delay_ms=20, max_body_bytes=1 << 20)
    with running(settings) as served:
        yield served


@pytest.fixture(scope="module")
def client(server: tuple[str, Any]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server[0], timeout=30) as c:
        yield c


def images(n: int = 2) -> np.ndarray:
    return RNG.random((n, 1, 8, 8), dtype=np.float32)


def test_health_and_server_metadata(client: httpx.Client) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    meta = client.get("/v2").json()
    assert meta["name"] == "dlforge" and meta["version"] and "binary_tensor_data" in meta["extensions"]


def test_model_metadata_and_ready_with_and_without_version(client: httpx.Client) -> None:
    for base in ("/v2/models/tiny", "/v2/models/tiny/versions/1"):
        meta = client.get(base).json()
        assert meta["name"] == "tiny" and meta["versions"] == ["1"] and meta["platform"] == "onnxruntime_onnx"
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
        assert [o["name"] for o in meta["outputs"]] == ["logits", "probabilities"]
        assert client.get(f"{base}/ready").json() == {"name": "tiny", "ready": True}


def test_flat_and_nested_data_agree_and_id_is_echoed(client: httpx.Client) -> None:
    x = images(3)
    flat = client.post(INFER, json=infer_body(x, id="req-7"))
    nested = client.post("/v2/models/tiny/versions/1/infer", json=infer_body(x, nested=True))
    assert flat.status_code == nested.status_code == 200
    assert flat.json()["id"] == "req-7" and flat.json()["model_version"] == "1"
    assert flat.json()["outputs"] == nested.json()["outputs"]
    probs = next(o for o in flat.json()["outputs"] if o["name"] == "probabilities")
    assert probs["shape"] == [3, 10]
    np.testing.assert_allclose(np.reshape(probs["data"], (3, 10)).sum(axis=1), 1, atol=1e-5)


def test_binary_round_trip_and_output_filtering(client: httpx.Client) -> None:
    x = images(4)
    want = np.reshape(client.post(INFER, json=infer_body(x)).json()["outputs"][1]["data"], (4, 10))
    body, headers = binary_body(x, outputs=[{"name": "probabilities", "parameters": {"binary_data": True}}])
    r = client.post(INFER, content=body, headers=headers)
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    response, arrays = parse_response_body(r.content, int(r.headers[HEADER_LENGTH]))
    assert [o.name for o in response.outputs] == ["probabilities"]
    np.testing.assert_allclose(arrays["probabilities"], want, rtol=1e-6)
    only_logits = client.post(INFER, json=infer_body(x, outputs=[{"name": "logits"}])).json()
    assert [o["name"] for o in only_logits["outputs"]] == ["logits"]


def _good() -> dict[str, Any]:
    return infer_body(images(1))


def _with(**changes: Any) -> dict[str, Any]:
    body = _good()
    body["inputs"][0].update(changes)
    return body


BAD_REQUESTS: dict[str, tuple[str, Any, int]] = {
    "bad json": (INFER, b"{not json", 400),
    "missing inputs": (INFER, {"id": "x"}, 400),
    "missing field": (INFER, {"inputs": [{"name": "input", "shape": [1, 1, 8, 8], "data": [0] * 64}]}, 400),
    "unknown input": (INFER, _with(name="image"), 400),
    "wrong datatype": (INFER, _with(datatype="INT32", data=[0] * 64), 400),
    "unknown datatype": (INFER, _with(datatype="FLOAT"), 400),
    "shape/count mismatch": (INFER, _with(data=[0.0] * 63), 400),
    "wrong shape": (INFER, _with(shape=[1, 1, 8, 7], data=[0.0] * 56), 400),
    "negative shape": (INFER, _with(shape=[-1, 1, 8, 8]), 400),
    "absurd shape": (INFER, _with(shape=[10**9, 1, 8, 8]), 400),
    "zero rows": (INFER, _with(shape=[0, 1, 8, 8], data=[]), 400),
    "strings as data": (INFER, _with(data=["a"] * 64), 400),
    "unknown output": (INFER, {**_good(), "outputs": [{"name": "scores"}]}, 400),
    "unknown model": ("/v2/models/nope/infer", _good(), 404),
    "unknown version": ("/v2/models/tiny/versions/9/infer", _good(), 404),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_gets_its_status_and_the_server_stays_healthy(client: httpx.Client, case: str) -> None:
    path, body, status = BAD_REQUESTS[case]
    r = client.post(path, content=body) if isinstance(body, bytes) else client.post(path, json=body)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"} and r.json()["error"]
    assert client.post(INFER, json=_good()).status_code == 200


def test_unknown_routes_and_methods_answer_json_errors(client: httpx.Client) -> None:
    assert client.get("/v2/nothing").json() == {"error": "Not Found"}
    r = client.get(INFER)
    assert r.status_code == 405 and "error" in r.json()
    assert client.post("/v2/repository/index").status_code == 404  # repository API off without admin token


def test_body_limit_413_by_content_length_and_by_chunked_stream(client: httpx.Client) -> None:
    host, port = client.base_url.host, client.base_url.port
    with socket.create_connection((host, port), timeout=10) as raw:  # declares 10 MiB, sends none of it
        raw.sendall(f"POST {INFER} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {10 << 20}\r\n\r\n".encode())
        reply = raw.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 413") and "limit" in reply

    def chunks() -> Iterator[bytes]:
        for _ in range(40):  # 2.5 MiB in 64 KiB chunks, no Content-Length: the limit is 1 MiB
            yield b" " * (64 << 10)

    with httpx.Client(base_url=str(client.base_url), timeout=30) as fresh:
        r = fresh.post(INFER, content=chunks())
    assert r.status_code == 413
    assert client.get("/v2/health/ready").status_code == 200


def test_concurrent_requests_are_batched(client: httpx.Client, server: tuple[str, Any]) -> None:
    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=server[0], timeout=30) as c:
            replies = await asyncio.gather(*(c.post(INFER, json=_good()) for _ in range(24)))
        return [r.status_code for r in replies]

    assert asyncio.run(burst()) == [200] * 24
    text = client.get("/metrics").text
    buckets = {line.split('le="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
               for line in text.splitlines() if line.startswith("dlforge_batch_size_bucket")}
    assert buckets["+Inf"] > buckets["1.0"], "no batch held more than one row"
    for name in ("dlforge_requests_total", "dlforge_request_seconds", "dlforge_queue_seconds",
                 "dlforge_compute_seconds", "dlforge_queue_depth", "dlforge_models_loaded 1.0"):
        assert name in text
    assert 'status="200"' in text and 'status="400"' in text


def test_classify_an_uploaded_image(client: httpx.Client) -> None:
    buf = io.BytesIO()
    Image.fromarray((RNG.random((32, 32, 3)) * 255).astype(np.uint8)).save(buf, format="PNG")
    r = client.post("/v2/models/tiny/classify?top_k=3", files={"file": ("digit.png", buf.getvalue(), "image/png")})
    assert r.status_code == 200, r.text
    predictions = r.json()["predictions"]
    assert len(predictions) == 3 and predictions[0]["probability"] >= predictions[1]["probability"]
    assert predictions[0]["label"] in [str(i) for i in range(10)]
    bad = client.post("/v2/models/tiny/classify", files={"file": ("x.png", b"not an image", "image/png")})
    assert bad.status_code == 400
    no_k = client.post("/v2/models/tiny/classify?top_k=zero", files={"file": ("x.png", b"", "image/png")})
    assert no_k.status_code == 400


def test_classify_outcomes_are_counted_in_request_metrics(client: httpx.Client, server: tuple[str, Any]) -> None:
    registry = server[1].state.serve.metrics.registry

    def count(status: str) -> float:
        labels = {"model": "tiny", "version": "1", "status": status}
        return registry.get_sample_value("dlforge_requests_total", labels) or 0.0

    before = count("200"), count("400")
    buf = io.BytesIO()
    Image.fromarray((RNG.random((8, 8)) * 255).astype(np.uint8)).save(buf, format="PNG")
    url = "/v2/models/tiny/classify"
    assert client.post(url, files={"file": ("d.png", buf.getvalue(), "image/png")}).status_code == 200
    assert client.post(url, files={"file": ("x.png", b"not an image", "image/png")}).status_code == 400
    assert client.post(f"{url}?top_k=0", files={"file": ("x.png", b"", "image/png")}).status_code == 400
    assert (count("200"), count("400")) == (before[0] + 1, before[1] + 2)


def test_a_full_queue_is_503_with_retry_after_and_the_server_stays_healthy(model_package: Path) -> None:
    # inline_max_ms=0: batches run on the inference threads, so the slowed model below keeps the event loop
    # free and the burst really queues (an inline 50 ms batch would hold the loop and serialise the burst).
    settings = Settings(path=model_package, max_batch_size=1, max_queue_delay_ms=0, max_queue=1, inline_max_ms=0,
                        max_inflight=64)  # the queue bound sheds here, not the in-flight one
    with running(settings) as (url, app):
        batcher = app.state.serve.repository.get("tiny").batcher
        original = batcher.run_batch

        def slow(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            time.sleep(0.05)
            return original(batch)

        batcher.run_batch = slow

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=url, timeout=30) as c:
                return await asyncio.gather(*(c.post(INFER, json=_good()) for _ in range(12)))

        replies = asyncio.run(burst())
        statuses = sorted(r.status_code for r in replies)
        assert set(statuses) == {200, 503}, statuses
        for r in replies:
            if r.status_code == 503:
                assert r.headers["retry-after"] == "1" and "queue is full" in r.json()["error"]
        batcher.run_batch = original
        with httpx.Client(base_url=url) as c:
            assert c.get("/v2/health/ready").status_code == 200
            assert c.post(INFER, json=_good()).status_code == 200
            assert 'status="503"' in c.get("/metrics").text


def test_runtime_error_is_500_json_and_the_server_stays_up(client: httpx.Client, server: tuple[str, Any]) -> None:
    batcher = server[1].state.serve.repository.get("tiny").batcher
    original = batcher.run_batch

    def broken(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise RuntimeError("engine exploded")

    batcher.run_batch = broken
    try:
        r = client.post(INFER, json=_good())
    finally:
        batcher.run_batch = original
    assert r.status_code == 500 and "internal error (ref " in r.json()["error"]
    assert "engine exploded" not in r.text  # exception text stays in the server log
    assert client.post(INFER, json=_good()).status_code == 200


def test_deadline_is_504(model_package: Path) -> None:
    with running(Settings(path=model_package, request_timeout_s=1e-9)) as (url, _):
        r = httpx.post(f"{url}{INFER}", json=_good())
    assert r.status_code == 504 and "error" in r.json()


def test_auth_tokens_and_admin_routes(model_package: Path) -> None:
    settings = Settings(path=model_package, tokens=("secret",), admin_token="admin")
    with running(settings) as (url, _), httpx.Client(base_url=url) as c:
        assert c.get("/v2/health/ready").status_code == 200  # probes stay open
        no = c.post(INFER, json=_good())
        assert no.status_code == 401 and no.headers["www-authenticate"] == "Bearer"
        assert c.post(INFER, json=_good(), headers={"Authorization": "Bearer wrong"}).status_code == 403
        assert c.post(INFER, json=_good(), headers={"Authorization": "Bearer secret"}).status_code == 200
        assert c.get("/v2/models/tiny").status_code == 401
        assert c.post("/v2/repository/index").status_code == 401
        assert c.post("/v2/repository/index", headers={"Authorization": "Bearer secret"}).status_code == 403
        index = c.post("/v2/repository/index", headers={"Authorization": "Bearer admin"})
        assert index.json() == [{"name": "tiny", "version": "1", "state": "READY", "reason": ""}]
        assert "model_repository" in c.get("/v2").json()["extensions"]


def test_batcher_settings_come_from_the_measured_latency_unless_given(model_package: Path) -> None:
    """Default queue delay = batch-1 latency (≤ 5 ms); batches run on the loop only for sub-threshold models."""
    x = images(3)
    for inline_max_ms, inline in ((1000.0, True), (0.0, False)):
        with running(Settings(path=model_package, inline_max_ms=inline_max_ms)) as (url, app):
            batcher = app.state.serve.repository.get("tiny", None).batcher
            assert batcher.max_batch_size == 32 and 0 < batcher.max_queue_delay <= 0.005
            assert batcher.inline is inline
            reply = httpx.post(f"{url}{INFER}", json=infer_body(x), timeout=30)
            assert reply.status_code == 200 and reply.json()["outputs"][0]["shape"] == [3, 10]
    with running(Settings(path=model_package, max_batch_size=4, max_queue_delay_ms=7)) as (_, app):
        batcher = app.state.serve.repository.get("tiny", None).batcher
        assert batcher.max_batch_size == 4 and batcher.max_queue_delay == pytest.approx(0.007)


def test_the_experiments_serving_section_reaches_the_server_and_a_flag_overrides_it(model_package: Path,
                                                                                    tmp_path: Path) -> None:
    """#18: `export.serving` is written into the manifest by `dlforge export` and read by `dlforge serve`."""
    import shutil

    import yaml

    from dlforge.export.package import export_run, load_package

    run = tmp_path / "run"
    shutil.copytree(model_package.parent, run, ignore=shutil.ignore_patterns("package"))
    raw = yaml.safe_load((run / "config.yaml").read_text())
    raw["export"]["serving"] = {"max_batch_size": 2, "max_batch_rows": 3}
    (run / "config.yaml").write_text(yaml.safe_dump(raw))
    package = export_run(run)
    assert load_package(package).manifest.serving.max_batch_rows == 3
    for flags, status in (({}, 400), ({"max_batch_rows": 5}, 200)):
        with running(Settings(path=package, **flags)) as (url, _), httpx.Client(base_url=url, timeout=30) as c:
            assert c.post(INFER, json=infer_body(images(3))).status_code == 200
            r = c.post(INFER, json=infer_body(images(4)))
            assert r.status_code == status, r.text
