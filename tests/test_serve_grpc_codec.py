"""The gRPC codec and tables without a server: typed and raw contents, every datatype, the status table,
the RPC table against the .proto, and the committed generated code against a fresh protoc run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
from fastapi.exceptions import RequestValidationError

from dlforge.serve.app import _STATUS
from dlforge.serve.batcher import QueueFull
from dlforge.serve.grpc.codec import CONTENTS, decode_request, encode_response
from dlforge.serve.grpc.proto import grpc_predict_v2_pb2 as pb
from dlforge.serve.grpc.service import SERVICE, InferenceService, rpc_table
from dlforge.serve.grpc.status import code_of, kinds
from dlforge.serve.protocol import ProtocolError, RequestOutput
from dlforge.serve.repository import ModelNotFound
from dlforge.serve.security import AuthError, BodyTooLarge
from dlforge.serve.tensors import encode_binary

SRC = Path(__file__).resolve().parents[1] / "src"
PROTO = SRC / "dlforge/serve/grpc/proto/grpc_predict_v2.proto"

HTTP_ONLY = {RequestValidationError, BodyTooLarge}  # raised by the HTTP layer alone (gRPC limits its own size)
SAMPLES = {
    "BOOL": np.array([[True, False, True]]),
    "INT8": np.array([[-128, 0, 127]], np.int8),
    "INT16": np.array([[-32768, 1, 32767]], np.int16),
    "INT32": np.array([[-(2**31), 2, 2**31 - 1]], np.int32),
    "INT64": np.array([[-(2**63), 3, 2**63 - 1]], np.int64),
    "UINT8": np.array([[0, 1, 255]], np.uint8),
    "UINT16": np.array([[0, 1, 65535]], np.uint16),
    "UINT32": np.array([[0, 1, 2**32 - 1]], np.uint32),
    "UINT64": np.array([[0, 1, 2**64 - 1]], np.uint64),
    "FP32": np.array([[0.5, -1.25, 3.0e38]], np.float32),
    "FP64": np.array([[0.1, -2.5, 1e300]], np.float64),
    "BYTES": np.array([[b"a", b"", "é".encode()]], dtype=object),
}


def typed_request(name: str, datatype: str, array: np.ndarray) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m", id="7")
    tensor = request.inputs.add(name=name, datatype=datatype, shape=array.shape)
    getattr(tensor.contents, CONTENTS[datatype][0]).extend(array.reshape(-1).tolist())
    return request


@pytest.mark.parametrize("datatype", list(SAMPLES))
def test_typed_contents_round_trip_every_datatype(datatype: str) -> None:
    array = SAMPLES[datatype]
    wire, arrays, raw = decode_request(typed_request("x", datatype, array))
    assert not raw and wire.id == "7" and wire.inputs[0].shape == [1, 3]
    assert arrays[0].dtype == array.dtype and arrays[0].shape == (1, 3)
    assert arrays[0].tolist() == array.tolist()
    response = encode_response("m", "1", "7", {"y": arrays[0]}, None, raw=False)
    out = response.outputs[0]
    assert (out.name, out.datatype, list(out.shape)) == ("y", datatype, [1, 3])
    assert not response.raw_output_contents
    assert list(getattr(out.contents, CONTENTS[datatype][0])) == array.reshape(-1).tolist()


@pytest.mark.parametrize("datatype", [*SAMPLES, "FP16"])
def test_raw_contents_round_trip_every_datatype(datatype: str) -> None:
    array = SAMPLES.get(datatype, np.array([[0.5, -2.0, 65504.0]], np.float16))
    request = pb.ModelInferRequest(model_name="m", raw_input_contents=[encode_binary(array, datatype)])
    request.inputs.add(name="x", datatype=datatype, shape=array.shape)
    _, arrays, raw = decode_request(request)
    assert raw and arrays[0].tolist() == array.tolist()
    response = encode_response("m", "1", "", {"y": arrays[0]}, None, raw=True)
    assert response.raw_output_contents[0] == encode_binary(array, datatype)
    assert not response.outputs[0].HasField("contents")


def test_a_response_holding_fp16_is_raw_even_for_a_typed_request() -> None:
    outputs = {"a": np.ones((1, 2), np.float32), "b": np.ones((1, 2), np.float16)}
    response = encode_response("m", "1", "", outputs, None, raw=False)
    assert len(response.raw_output_contents) == 2  # one entry per output: all raw or none


def test_requested_outputs_select_and_order() -> None:
    outputs = {"a": np.zeros((1, 1), np.float32), "b": np.ones((1, 1), np.float32)}
    response = encode_response("m", "1", "", outputs, [RequestOutput(name="b")], raw=False)
    assert [o.name for o in response.outputs] == ["b"] and list(response.outputs[0].contents.fp32_contents) == [1.0]


def _raw_fp32(values: list[float], shape: list[int]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m", raw_input_contents=[np.array(values, "<f4").tobytes()])
    request.inputs.add(name="x", datatype="FP32", shape=shape)
    return request


def _bad(tensor_datatype: str, field: str, values: list, shape: list[int]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="x", datatype=tensor_datatype, shape=shape)
    getattr(tensor.contents, field).extend(values)
    return request


@pytest.mark.parametrize(("request_", "message"), [
    (_bad("INT8", "int_contents", [128], [1]), "out of range for INT8"),
    (_bad("UINT16", "uint_contents", [70000], [1]), "out of range for UINT16"),
    (_bad("FP32", "int_contents", [1], [1]), "goes in contents.fp32_contents, not contents.int_contents"),
    (_bad("FP32", "fp32_contents", [1.0, 2.0], [1, 3]), "needs 3 elements but contents.fp32_contents has 2"),
    (_bad("FP16", "fp32_contents", [1.0], [1]), "FP16 has no typed contents field"),
    (_bad("FP8", "fp32_contents", [1.0], [1]), "unknown datatype 'FP8'"),
    (_bad("FP32", "fp32_contents", [], [1, -1]), "negative dimension"),
    (_raw_fp32([1.0, 2.0], [1, 3]), "binary data is 8 bytes but 3 FP32 elements need 12"),
])
def test_bad_tensors_are_protocol_errors_naming_the_input(request_: pb.ModelInferRequest, message: str) -> None:
    with pytest.raises(ProtocolError, match=message) as err:
        decode_request(request_)
    assert "input 'x'" in str(err.value)


def test_raw_contents_must_cover_every_input_and_exclude_typed_contents() -> None:
    request = _raw_fp32([1.0], [1])
    request.inputs.add(name="y", datatype="FP32", shape=[1])
    with pytest.raises(ProtocolError, match="raw_input_contents has 1 entries but the request has 2 inputs"):
        decode_request(request)
    mixed = _raw_fp32([1.0], [1])
    mixed.inputs[0].contents.fp32_contents.append(1.0)
    with pytest.raises(ProtocolError, match="has typed contents although the request uses raw_input_contents"):
        decode_request(mixed)
    twice = _bad("FP32", "fp32_contents", [1.0], [1])
    twice.inputs.add(name="x", datatype="FP32", shape=[1]).contents.fp32_contents.append(2.0)
    with pytest.raises(ProtocolError, match="input 'x' appears more than once"):
        decode_request(twice)


def test_status_codes_cover_every_error_kind_of_the_http_table() -> None:
    assert {kind for kind, _ in _STATUS} - HTTP_ONLY <= set(kinds())
    assert code_of(ProtocolError("x")) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(ModelNotFound("x")) == grpc.StatusCode.NOT_FOUND
    assert code_of(AuthError(401, "x")) == grpc.StatusCode.UNAUTHENTICATED
    assert code_of(AuthError(403, "x")) == grpc.StatusCode.PERMISSION_DENIED
    assert code_of(QueueFull("x")) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert code_of(KeyError("bug")) == grpc.StatusCode.INTERNAL


def test_the_rpc_table_serves_every_rpc_of_the_proto_under_the_protocol_name() -> None:
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    table = rpc_table(InferenceService.__new__(InferenceService))
    assert set(table) == {m.name for m in service.methods}
    for method in service.methods:
        _, request, response = table[method.name]
        assert (method.input_type, method.output_type) == (request.DESCRIPTOR, response.DESCRIPTOR)
    assert SERVICE == "inference.GRPCInferenceService"


def test_committed_generated_code_matches_protoc(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (dev extra) regenerates the code")
    cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{SRC}", f"--python_out={tmp_path}",
           f"--pyi_out={tmp_path}", str(PROTO)]
    subprocess.run(cmd, check=True, capture_output=True)
    for suffix in ("_pb2.py", "_pb2.pyi"):
        name = f"grpc_predict_v2{suffix}"
        fresh = (tmp_path / "dlforge/serve/grpc/proto" / name).read_text()
        assert fresh == (PROTO.parent / name).read_text(), f"{name} is stale: run `make proto`"
