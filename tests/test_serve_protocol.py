"""V2 request and response bodies: JSON, the binary tensor data extension, and their errors."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dlforge.serve.protocol import (
    HEADER_LENGTH,
    InferenceRequest,
    MetadataTensor,
    ProtocolError,
    RequestOutput,
    check_outputs,
    encode_response,
    parse_header_length,
    parse_request_body,
    parse_response_body,
    wants_binary,
)
from dlforge.serve.validate import ModelSignature, check_request

SRC = Path(__file__).resolve().parents[1] / "src"


def binary_body(header: dict, *blobs: bytes) -> tuple[bytes, int]:
    """A binary-extension body and its header length, as tritonclient would send it."""
    head = json.dumps(header).encode()
    return head + b"".join(blobs), len(head)


def json_body(header: dict) -> bytes:
    return json.dumps(header).encode()


# --- requests ---------------------------------------------------------------------------------


def test_parse_json_request() -> None:
    body = json_body(
        {
            "id": "req-7",
            "parameters": {"binary_data_output": True, "priority": 2},
            "inputs": [
                {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4]]}
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": False}}],
            "some_future_field": 1,
        }
    )
    request, arrays = parse_request_body(body, None)
    assert request.id == "req-7"
    assert request.parameters == {"binary_data_output": True, "priority": 2}
    assert request.outputs == [RequestOutput(name="y", parameters={"binary_data": False})]
    np.testing.assert_array_equal(arrays[0], np.array([[1, 2], [3, 4]], np.float32))


def test_parse_binary_request_with_one_json_and_two_binary_inputs() -> None:
    image = np.arange(6, dtype=np.float32).reshape(2, 3)
    words = [b"ab", b""]
    text = b"".join(struct.pack("<I", len(w)) + w for w in words)
    header = {
        "inputs": [
            {"name": "image", "shape": [2, 3], "datatype": "FP32",
             "parameters": {"binary_data_size": image.nbytes}},
            {"name": "scale", "shape": [1], "datatype": "FP64", "data": [0.5]},
            {"name": "text", "shape": [2], "datatype": "BYTES",
             "parameters": {"binary_data_size": len(text)}},
        ]
    }  # fmt: skip
    body, length = binary_body(header, image.tobytes(), text)
    request, arrays = parse_request_body(body, length)
    assert [i.name for i in request.inputs] == ["image", "scale", "text"]
    np.testing.assert_array_equal(arrays[0], image)
    assert arrays[1].tolist() == [0.5]
    assert arrays[2].tolist() == words


def test_header_only_binary_request() -> None:
    body, length = binary_body(
        {"inputs": [{"name": "x", "shape": [1], "datatype": "INT8", "data": [3]}]}
    )
    assert parse_request_body(body, length)[1][0].tolist() == [3]


def inputs(*items: dict) -> bytes:
    return json_body({"inputs": list(items)})


X = {"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "invalid request: Invalid JSON"),
        (b"", "invalid request: Invalid JSON"),
        (b"[]", "invalid request: Input should be an object"),
        (b"{}", "invalid request: inputs: Field required"),
        (b'{"inputs": {}}', "inputs: Input should be a valid array"),
        (inputs({**X, "shape": None}), r"inputs\[0\]\.shape: Input should be a valid array"),
        (
            inputs({**X, "shape": [1.0]}),
            r"inputs\[0\]\.shape\[0\]: Input should be a valid integer",
        ),
        (inputs({k: v for k, v in X.items() if k != "datatype"}), "datatype: Field required"),
        (json_body({"id": 5, "inputs": []}), "id: Input should be a valid string"),
        (inputs({k: v for k, v in X.items() if k != "data"}), "input 'x': has no 'data'"),
        (inputs({**X, "shape": [-1], "data": []}), "input 'x': shape \\[-1\\] has a negative"),
        (inputs(X, X), "input 'x' appears more than once"),
        (json_body({"inputs": [], "parameters": {"p": [1]}}), r"parameters\.p"),
    ],
)
def test_bad_json_requests_raise_protocol_error(body: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        parse_request_body(body, None)


def binary_input(size: object) -> dict:
    return {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32",
                        "parameters": {"binary_data_size": size}}]}  # fmt: skip


@pytest.mark.parametrize(
    ("header", "tail", "message"),
    [
        (binary_input(8), bytes(4), "declare 8 bytes of binary data but 4 bytes follow"),
        (binary_input(8), bytes(12), "declare 8 bytes of binary data but 12 bytes follow"),
        (binary_input(4), bytes(4), "binary data is 4 bytes but 2 FP32 elements need 8"),
        (binary_input(-8), bytes(8), "binary_data_size must be a non-negative integer"),
        (binary_input(True), bytes(8), "binary_data_size must be a non-negative integer"),
        (binary_input("8"), bytes(8), "binary_data_size must be a non-negative integer"),
    ],
)
def test_mismatched_binary_sizes(header: dict, tail: bytes, message: str) -> None:
    body, length = binary_body(header, tail)
    with pytest.raises(ProtocolError, match=message):
        parse_request_body(body, length)


def test_header_length_problems() -> None:
    body, length = binary_body(binary_input(8), bytes(8))
    with pytest.raises(ProtocolError, match=f"Invalid JSON.*needs the {HEADER_LENGTH} header"):
        parse_request_body(body, None)
    with pytest.raises(ProtocolError, match=f"{HEADER_LENGTH} header is missing"):
        parse_request_body(body[:length], None)
    with pytest.raises(ProtocolError, match="but the body is"):
        parse_request_body(body, len(body) + 1)
    with pytest.raises(ProtocolError, match="invalid request"):
        parse_request_body(body, length - 1)  # header cut short
    assert parse_header_length(None) is None
    assert parse_header_length("12") == 12
    for bad in ("twelve", "-1"):
        with pytest.raises(ProtocolError, match=HEADER_LENGTH):
            parse_header_length(bad)


def test_wants_binary() -> None:
    assert wants_binary(None, "binary_data", True) is True
    assert wants_binary({"binary_data": False}, "binary_data", True) is False
    with pytest.raises(ProtocolError, match=r"parameters\.binary_data must be true or false"):
        wants_binary({"binary_data": 1}, "binary_data", False)


def test_requests_are_checked_against_the_model_signature() -> None:
    declared = [
        MetadataTensor(name="image", datatype="FP32", shape=[-1, 3]),
        MetadataTensor(name="mask", datatype="BOOL", shape=[-1]),
    ]

    def request(*inputs: tuple[str, str, list[int]]) -> InferenceRequest:
        return InferenceRequest(
            inputs=[{"name": n, "datatype": d, "shape": s, "data": []} for n, d, s in inputs]
        )

    signature = ModelSignature(tuple(declared), ("probabilities",), max_rows=4)
    check_request(request(("mask", "BOOL", [2]), ("image", "FP32", [2, 3])), signature)
    cases = [
        (request(("imag", "FP32", [1, 3])), r"unknown input 'imag' — did you mean 'image'\?"),
        (request(("image", "FP32", [1, 3])), r"missing input\(s\): mask"),
        (request(("image", "FP64", [1, 3]), ("mask", "BOOL", [1])), "datatype must be FP32"),
        (request(("image", "FP32", [1, 4]), ("mask", "BOOL", [1])), r"does not match \[-1, 3\]"),
        (request(("image", "FP32", [3]), ("mask", "BOOL", [1])), r"shape \[3\] does not match"),
        (request(("image", "FP32", [5, 3]), ("mask", "BOOL", [5])), r"5 rows is over this model's limit of 4"),
    ]
    for req, message in cases:
        with pytest.raises(ProtocolError, match=message):
            check_request(req, signature)


# --- responses --------------------------------------------------------------------------------

OUTPUTS = {
    "logits": np.array([[0.5, -1.5], [2.0, 0.0]], dtype=np.float32),
    "label": np.array([b"cat", b"dog"], dtype=object),
    "half": np.array([1.0, -0.5], dtype=np.float16),
}


def test_json_response_echoes_id_and_filters_outputs() -> None:
    requested = [RequestOutput(name="label"), RequestOutput(name="logits")]
    body, headers = encode_response("clf", "3", "req-7", OUTPUTS, requested, False)
    assert headers == {"Content-Type": "application/json"}
    assert json.loads(body) == {
        "model_name": "clf",
        "model_version": "3",
        "id": "req-7",
        "outputs": [
            {"name": "label", "shape": [2], "datatype": "BYTES", "data": ["cat", "dog"]},
            {"name": "logits", "shape": [2, 2], "datatype": "FP32", "data": [0.5, -1.5, 2.0, 0.0]},
        ],
    }


def test_json_response_without_id_or_version_omits_them() -> None:
    outputs = {"y": np.array([True, False])}
    body, _ = encode_response("m", None, None, outputs, None, False)
    assert json.loads(body) == {
        "model_name": "m",
        "outputs": [{"name": "y", "shape": [2], "datatype": "BOOL", "data": [True, False]}],
    }


def test_binary_response_round_trip() -> None:
    requested = [
        RequestOutput(name="logits", parameters={"binary_data": True}),
        RequestOutput(name="label"),  # follows the request-level default (JSON)
        RequestOutput(name="half", parameters={"binary_data": True}),
    ]
    body, headers = encode_response("clf", "1", "r", OUTPUTS, requested, False)
    assert headers["Content-Type"] == "application/octet-stream"
    length = int(headers[HEADER_LENGTH])
    header = json.loads(body[:length])
    assert [o.get("parameters") for o in header["outputs"]] == [
        {"binary_data_size": 16}, None, {"binary_data_size": 4}
    ]  # fmt: skip
    assert "data" not in header["outputs"][0]
    assert len(body) == length + 16 + 4
    response, arrays = parse_response_body(body, length)
    assert response.id == "r"
    assert list(arrays) == ["logits", "label", "half"]
    for name, array in arrays.items():
        assert array.dtype == OUTPUTS[name].dtype
        np.testing.assert_array_equal(array, OUTPUTS[name])


def test_binary_default_with_per_output_override() -> None:
    requested = [RequestOutput(name="logits", parameters={"binary_data": False})]
    body, headers = encode_response("m", None, None, OUTPUTS, requested, True)
    assert HEADER_LENGTH not in headers
    assert json.loads(body)["outputs"][0]["data"] == [0.5, -1.5, 2.0, 0.0]
    body, headers = encode_response("m", None, None, {"y": OUTPUTS["label"]}, None, True)
    _, arrays = parse_response_body(body, int(headers[HEADER_LENGTH]))
    assert arrays["y"].tolist() == [b"cat", b"dog"]


def test_unknown_requested_output() -> None:
    with pytest.raises(ProtocolError, match=r"unknown output 'logit' — did you mean 'logits'\?"):
        encode_response("m", None, None, OUTPUTS, [RequestOutput(name="logit")], False)
    check_outputs(["y", "z"], [RequestOutput(name="z")])
    check_outputs(["y"], None)
    with pytest.raises(ProtocolError, match=r"unknown output 'w' \(outputs: y, z\)"):
        check_outputs(["y", "z"], [RequestOutput(name="w")])
    with pytest.raises(ProtocolError, match="binary_data must be true or false"):
        check_outputs(["y"], [RequestOutput(name="y", parameters={"binary_data": "yes"})])


def test_fp16_output_in_json_is_refused_with_a_fix() -> None:
    with pytest.raises(ProtocolError, match=r"output 'half' is FP16.*binary_data=true"):
        encode_response("m", None, None, OUTPUTS, None, False)


def test_request_round_trip_through_response_parser_json() -> None:
    body, _ = encode_response("m", None, None, {"y": OUTPUTS["logits"]}, None, False)
    _, arrays = parse_response_body(body, None)
    np.testing.assert_array_equal(arrays["y"], OUTPUTS["logits"])


# --- layering ---------------------------------------------------------------------------------


def test_protocol_imports_no_torch_and_no_web_framework() -> None:
    code = (
        "import sys, dlforge.serve.protocol\n"
        "heavy = {'torch', 'fastapi', 'starlette', 'onnxruntime'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)
