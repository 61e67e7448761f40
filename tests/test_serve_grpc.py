"""The V2 gRPC service against a real server, spoken to by tritonclient (the Triton project's client).

One server per module: a repository with two versions, an inference token, an admin token and a
1 MiB message limit, serving HTTP and gRPC from one process. Every answer is checked against the
HTTP side or the engine; every bad request against the status code the mapping promises.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tc
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from dlforge.serve.settings import Settings
from tests.serve_helpers import free_port, infer_body, make_repository, running

pytestmark = pytest.mark.serve
AUTH = {"authorization": "Bearer secret"}
ADMIN = {"authorization": "Bearer admin"}
SHAPE = (4, 1, 8, 8)


class Server:
    def __init__(self, url: str, grpc_port: int) -> None:
        self.url = url
        self.target = f"127.0.0.1:{grpc_port}"
        self.client = tc.InferenceServerClient(self.target)
        self.channel = grpc.insecure_channel(self.target)
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(self.channel)  # Triton's own stub, for typed data

    def close(self) -> None:
        self.client.close()
        self.channel.close()


@pytest.fixture(scope="module")
def server(model_package: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    repo = make_repository(model_package, tmp_path_factory.mktemp("grpc") / "repo", {"tiny": ["1", "2"]})
    settings = Settings(path=repo, grpc_port=0, tokens=("secret",), admin_token="admin", max_body_bytes=1 << 20)
    with running(settings) as (url, app):
        s = Server(url, app.state.serve.grpc_port)
        try:
            yield s
        finally:
            s.close()


def triton_input(x: np.ndarray, name: str = "input", datatype: str = "FP32") -> tc.InferInput:
    tensor = tc.InferInput(name, list(x.shape), datatype)
    tensor.set_data_from_numpy(x)
    return tensor


def status_of(call: object) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as err:
        call()  # type: ignore[operator]
    return str(err.value.status()), str(err.value.message())


def test_health_and_metadata(server: Server) -> None:
    c = server.client
    assert c.is_server_live() and c.is_server_ready()
    meta = c.get_server_metadata()
    assert meta.name == "dlforge" and "model_repository" in meta.extensions
    model = c.get_model_metadata("tiny", headers=AUTH)
    assert (model.name, list(model.versions), model.platform) == ("tiny", ["1", "2"], "onnxruntime_onnx")
    assert [(t.name, t.datatype, list(t.shape)) for t in model.inputs] == [("input", "FP32", [-1, 1, 8, 8])]
    assert [(t.name, list(t.shape)) for t in model.outputs] == [("logits", [-1, 10]), ("probabilities", [-1, 10])]
    assert c.is_model_ready("tiny", "1", headers=AUTH)
    assert status_of(lambda: c.is_model_ready("tiny", "3", headers=AUTH))[0] == "StatusCode.NOT_FOUND"


def test_raw_infer_returns_what_http_returns(server: Server) -> None:
    x = np.random.default_rng(0).random(SHAPE, dtype=np.float32)
    wanted = [tc.InferRequestedOutput("probabilities"), tc.InferRequestedOutput("logits")]
    result = server.client.infer("tiny", [triton_input(x)], model_version="1", outputs=wanted, request_id="r1",
                                 headers=AUTH)
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("tiny", "1", "r1")
    http = httpx.post(f"{server.url}/v2/models/tiny/versions/1/infer", json=infer_body(x), headers=AUTH).json()
    for output in http["outputs"]:
        got = result.as_numpy(output["name"])
        assert got.shape == tuple(output["shape"]) == (4, 10) and got.dtype == np.float32
        np.testing.assert_allclose(got, np.array(output["data"], np.float32).reshape(4, 10), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(result.as_numpy("probabilities").sum(axis=1), 1.0, rtol=1e-5)
    only = server.client.infer("tiny", [triton_input(x)], outputs=[tc.InferRequestedOutput("logits")], headers=AUTH)
    assert only.as_numpy("probabilities") is None and only.as_numpy("logits").shape == (4, 10)


def test_typed_contents_in_typed_contents_out(server: Server) -> None:
    x = np.random.default_rng(1).random(SHAPE, dtype=np.float32)
    request = service_pb2.ModelInferRequest(model_name="tiny", id="typed")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=SHAPE)
    tensor.contents.fp32_contents.extend(x.reshape(-1).tolist())
    request.outputs.add(name="probabilities")
    response = server.stub.ModelInfer(request, metadata=tuple(AUTH.items()), timeout=30)
    assert response.id == "typed" and not response.raw_output_contents
    typed = np.array(response.outputs[0].contents.fp32_contents, np.float32).reshape(4, 10)
    raw = server.client.infer("tiny", [triton_input(x)], headers=AUTH).as_numpy("probabilities")
    np.testing.assert_allclose(typed, raw, rtol=1e-6, atol=1e-7)


def test_bad_requests_get_the_listed_status_codes(server: Server) -> None:
    c = server.client
    x = np.zeros(SHAPE, np.float32)
    cases = {
        "StatusCode.UNAUTHENTICATED": lambda: c.infer("tiny", [triton_input(x)]),
        "StatusCode.PERMISSION_DENIED": lambda: c.infer("tiny", [triton_input(x)],
                                                        headers={"authorization": "Bearer nope"}),
        "StatusCode.NOT_FOUND": lambda: c.infer("tinny", [triton_input(x)], headers=AUTH),
        "StatusCode.INVALID_ARGUMENT": lambda: c.infer("tiny", [triton_input(x.astype(np.float64), datatype="FP64")],
                                                       headers=AUTH),
        "StatusCode.RESOURCE_EXHAUSTED": lambda: c.infer("tiny", [triton_input(np.zeros((5000, 1, 8, 8), np.float32))],
                                                         headers=AUTH),
    }
    for code, call in cases.items():
        assert status_of(call)[0] == code
    assert "did you mean 'tiny'" in status_of(cases["StatusCode.NOT_FOUND"])[1]
    invalid = {
        "datatype must be FP32": [triton_input(x.astype(np.float64), datatype="FP64")],
        "does not match [-1, 1, 8, 8]": [triton_input(np.zeros((1, 1, 8, 7), np.float32))],
        "unknown input 'image'": [triton_input(x, name="image")],
        "empty batch dimension; send at least one row": [triton_input(np.zeros((0, 1, 8, 8), np.float32))],
    }
    for message, inputs in invalid.items():
        code, text = status_of(lambda inputs=inputs: c.infer("tiny", inputs, headers=AUTH))
        assert code == "StatusCode.INVALID_ARGUMENT" and message in text
    code, text = status_of(lambda: c.infer("tiny", [triton_input(x)], outputs=[tc.InferRequestedOutput("probs")],
                                           headers=AUTH))
    assert code == "StatusCode.INVALID_ARGUMENT" and "unknown output 'probs'" in text
    assert status_of(lambda: c.infer("tiny", [triton_input(x)], model_version="9", headers=AUTH))[0] == \
        "StatusCode.NOT_FOUND"


def test_a_malformed_protobuf_is_invalid_argument_in_plain_words(server: Server) -> None:
    """#29: bytes that do not parse as the RPC's message are the client's mistake, said without internals."""
    for rpc in ("ModelInfer", "ServerLive", "ModelMetadata"):
        call = server.channel.unary_unary(f"/inference.GRPCInferenceService/{rpc}")  # raw bytes in and out
        with pytest.raises(grpc.RpcError) as err:
            call(b"\xff\xff\xff\x0f garbage", metadata=tuple(AUTH.items()), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value
        text = err.value.details()
        assert f"not a valid {rpc}" in text and "protobuf message" in text
        assert "<class" not in text and "DecodeError" not in text and "0x" not in text
    assert server.client.is_server_live()  # and it keeps serving


def test_raw_contents_that_do_not_fit_the_shape_are_invalid(server: Server) -> None:
    request = service_pb2.ModelInferRequest(model_name="tiny", raw_input_contents=[b"\0" * 10])
    request.inputs.add(name="input", datatype="FP32", shape=[1, 1, 8, 8])
    with pytest.raises(grpc.RpcError) as err:
        server.stub.ModelInfer(request, metadata=tuple(AUTH.items()), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "binary data is 10 bytes but 64 FP32 elements need 256" in err.value.details()


def _metric(url: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()))


def test_grpc_calls_share_the_http_metrics_and_batcher(server: Server) -> None:
    version = {"model": "tiny", "version": "2"}
    before_ok = _metric(server.url, "dlforge_requests_total", status="OK", **version)
    before_bad = _metric(server.url, "dlforge_requests_total", status="INVALID_ARGUMENT", **version)
    before_batches = _metric(server.url, "dlforge_batch_size_count", **version)
    x = np.zeros(SHAPE, np.float32)
    for _ in range(3):
        server.client.infer("tiny", [triton_input(x)], headers=AUTH)
    status_of(lambda: server.client.infer("tiny", [triton_input(x[:, :, :, :7])], headers=AUTH))
    httpx.post(f"{server.url}/v2/models/tiny/infer", json=infer_body(x), headers=AUTH).raise_for_status()
    assert _metric(server.url, "dlforge_requests_total", status="OK", **version) == before_ok + 3
    assert _metric(server.url, "dlforge_requests_total", status="INVALID_ARGUMENT", **version) == before_bad + 1
    # One batcher per model version behind both doors: 3 gRPC calls and 1 HTTP call ran 4 batches on it.
    assert _metric(server.url, "dlforge_batch_size_count", **version) == before_batches + 4


def test_repository_rpcs_need_the_admin_token_and_load_and_unload(server: Server) -> None:
    c = server.client
    assert status_of(lambda: c.get_model_repository_index(headers=AUTH))[0] == "StatusCode.PERMISSION_DENIED"
    assert status_of(lambda: c.unload_model("tiny"))[0] == "StatusCode.UNAUTHENTICATED"
    index = c.get_model_repository_index(headers=ADMIN)
    assert [(m.name, m.version, m.state) for m in index.models] == [("tiny", "1", "READY"), ("tiny", "2", "READY")]
    x = np.zeros(SHAPE, np.float32)
    try:
        c.unload_model("tiny", headers=ADMIN)
        assert not c.is_model_ready("tiny", headers=AUTH)
        assert status_of(lambda: c.infer("tiny", [triton_input(x)], headers=AUTH))[0] == "StatusCode.UNAVAILABLE"
        assert c.get_model_repository_index(headers=ADMIN, as_json=True)["models"][0]["state"] == "UNAVAILABLE"
    finally:
        c.load_model("tiny", headers=ADMIN)
    assert c.is_model_ready("tiny", headers=AUTH)
    assert c.infer("tiny", [triton_input(x)], headers=AUTH).as_numpy("probabilities").shape == (4, 10)
    code, text = status_of(lambda: c.load_model("tiny", config='{"backend": "x"}', headers=ADMIN))
    assert code == "StatusCode.INVALID_ARGUMENT" and "parameters config are not supported" in text


def test_without_an_admin_token_the_repository_rpcs_are_unimplemented(model_package: Path) -> None:
    with running(Settings(path=model_package, grpc_port=0, playground=False)) as (url, app):
        client = tc.InferenceServerClient(f"127.0.0.1:{app.state.serve.grpc_port}")
        try:
            code, text = status_of(lambda: client.get_model_repository_index())
            assert code == "StatusCode.UNIMPLEMENTED" and "--admin-token" in text
            assert client.is_model_ready("tiny")  # no token configured: models are open
            assert httpx.get(f"{url}/").status_code == 404  # --no-playground
        finally:
            client.close()


@pytest.mark.slow
def test_dlforge_serve_grpc_port_answers_and_stops_on_sigterm(model_package: Path) -> None:
    http_port, grpc_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "dlforge", "serve", str(model_package), "--port", str(http_port),
           "--grpc-port", str(grpc_port), "--workers", "1"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    client = tc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    try:
        deadline = time.monotonic() + 60
        while not _ready(client):
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "the gRPC side did not become ready"
            time.sleep(0.2)
        x = np.zeros((1, 1, 8, 8), np.float32)
        assert client.infer("tiny", [triton_input(x)]).as_numpy("probabilities").shape == (1, 10)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert f"gRPC (KServe V2) on 127.0.0.1, port {grpc_port}" in (proc.stdout.read().decode() if proc.stdout else "")


def test_a_grpc_port_in_use_is_one_error_line(model_package: Path) -> None:
    """A taken --grpc-port (or --port) is said before any model loads: `error:`, exit 2, no traceback."""
    from typer.testing import CliRunner

    from dlforge.cli import app

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for flags in (["--grpc-port", str(port)], ["--port", str(port)], ["--port", "8123", "--grpc-port", "8123"]):
            result = CliRunner().invoke(app, ["serve", str(model_package), *flags])
            lines = [line for line in result.output.splitlines() if line.strip()]
            assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: --"), result.output
            assert "Traceback" not in result.output and ("in use" in lines[0] or "same as --port" in lines[0])


def _ready(client: tc.InferenceServerClient) -> bool:
    try:
        return bool(client.is_server_ready(client_timeout=1))
    except InferenceServerException:
        return False
