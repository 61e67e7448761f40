"""The Open Inference Protocol (KServe V2) wire format: message types and request/response bodies.

Defined once here so routes, docs and clients agree. No torch and no web framework: this leaf
turns bodies (plain JSON, or the binary tensor data extension) into numpy arrays and back. The
tensor-level codecs and the datatype table live in tensors.py and are re-exported here.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from dlforge.registry import suggest
from dlforge.serve.tensors import (
    DATATYPES,
    MAX_ELEMENTS,
    MAX_NDIM,
    Datatype,
    ProtocolError,
    check_shape,
    datatype_of,
    decode_tensor,
    encode_binary,
    encode_json,
    get_datatype,
    json_type,
)

__all__ = [
    "DATATYPES",
    "HEADER_LENGTH",
    "MAX_ELEMENTS",
    "MAX_JSON_BYTES",
    "MAX_NDIM",
    "Datatype",
    "ErrorResponse",
    "InferenceRequest",
    "InferenceResponse",
    "JsonTooLarge",
    "MetadataTensor",
    "ModelMetadata",
    "ModelReady",
    "Parameters",
    "ProtocolError",
    "RepositoryIndexItem",
    "RepositoryIndexRequest",
    "RequestInput",
    "RequestOutput",
    "ResponseOutput",
    "ServerLive",
    "ServerMetadata",
    "ServerReady",
    "check_outputs",
    "check_shape",
    "check_unique",
    "datatype_of",
    "decode_input",
    "decode_tensor",
    "encode_response",
    "get_datatype",
    "parse_header_length",
    "parse_request_body",
    "parse_request_header",
    "parse_response_body",
    "shorten",
    "wants_binary",
]

HEADER_LENGTH = "Inference-Header-Content-Length"
MAX_JSON_BYTES = 16 << 20  # JSON parsing holds the GIL (~0.1 s per 16 MiB): larger tensors go binary
ORJSON_ABOVE_BYTES = 64 << 10  # below this, pydantic's parser is the faster one (measured)


class JsonTooLarge(ProtocolError):
    """The JSON part of a request is over the JSON limit (413): send big tensors as binary data."""

# --- wire types -------------------------------------------------------------------------------

Parameters = dict[str, StrictBool | StrictInt | StrictFloat | StrictStr]


class _Wire(BaseModel):
    # Unknown keys are ignored so newer clients keep working; `model_*` names are wire names.
    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class RequestInput(_Wire):
    name: StrictStr
    shape: list[StrictInt]
    datatype: StrictStr
    parameters: Parameters | None = None
    data: list[Any] | None = None


class RequestOutput(_Wire):
    name: StrictStr
    parameters: Parameters | None = None


class InferenceRequest(_Wire):
    id: StrictStr | None = None
    parameters: Parameters | None = None
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


class ResponseOutput(_Wire):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: list[Any] | None = None


class InferenceResponse(_Wire):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: Parameters | None = None
    outputs: list[ResponseOutput]


class MetadataTensor(_Wire):
    name: str
    datatype: str
    shape: list[int]  # -1 marks a variable dimension


class ModelMetadata(_Wire):
    name: str
    versions: list[str] | None = None
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]


class ServerMetadata(_Wire):
    name: str
    version: str
    extensions: list[str]


class ServerLive(_Wire):
    live: bool


class ServerReady(_Wire):
    ready: bool


class ModelReady(_Wire):
    name: str
    ready: bool


class RepositoryIndexRequest(_Wire):
    ready: bool = False


class RepositoryIndexItem(_Wire):
    name: str
    version: str | None = None
    state: str  # e.g. READY, UNAVAILABLE, LOADING
    reason: str = ""


class ErrorResponse(_Wire):
    error: str


# --- requests ---------------------------------------------------------------------------------


def decode_input(
    inp: RequestInput, binary: bytes | memoryview | None, max_elements: int = MAX_ELEMENTS
) -> np.ndarray:
    """The array for one request input; `binary` is its blob when sent as binary data."""
    return decode_tensor(
        f"input '{shorten(inp.name)}'", inp.datatype, inp.shape, inp.data, binary, max_elements
    )


def parse_header_length(value: str | None) -> int | None:
    """The `Inference-Header-Content-Length` header as an int (None when absent)."""
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        raise ProtocolError(f"{HEADER_LENGTH} must be an integer, got '{shorten(value)}'") from None
    if length < 0:
        raise ProtocolError(f"{HEADER_LENGTH} must not be negative, got {length}")
    return length


def parse_request_body(
    body: bytes, header_length: int | None, max_elements: int = MAX_ELEMENTS
) -> tuple[InferenceRequest, list[np.ndarray]]:
    """The request and one array per input (in request order), JSON or binary-extension body."""
    request, blobs = parse_request_header(body, header_length)
    arrays = [decode_input(i, b, max_elements) for i, b in zip(request.inputs, blobs, strict=True)]
    return request, arrays


def parse_request_header(
    body: bytes, header_length: int | None, max_json_bytes: int = MAX_JSON_BYTES
) -> tuple[InferenceRequest, list[memoryview | None]]:
    """The validated request with its `data` still raw, and each input's binary blob (or None).

    Tensor data is left undecoded so a caller can check names, datatypes and shapes against a model
    first. Large JSON is parsed by orjson, with pydantic validating only the structure around `data`
    (1.2-1.5x faster at 0.5-15 MiB, benchmarks/bench_json.py); small bodies go through pydantic's own
    parser, which is faster for them."""
    header, tail = _split_header(body, header_length)
    if len(header) > max_json_bytes:
        raise JsonTooLarge(
            f"the JSON part of the request is {len(header)} bytes, over the limit of {max_json_bytes}; send large "
            f"tensors as binary data (parameters.binary_data_size with the {HEADER_LENGTH} header)"
        )
    request = _validate_request(header, header_length)
    check_unique("input", [i.name for i in request.inputs])
    check_unique("output", [o.name for o in request.outputs or []])
    sizes = [_binary_size(f"input '{shorten(i.name)}'", i.parameters) for i in request.inputs]
    if header_length is None and any(s is not None for s in sizes):
        raise ProtocolError(
            f"inputs use parameters.binary_data_size but the {HEADER_LENGTH} header is missing"
        )
    return request, _split_blobs(tail, sizes, "input")


def shorten(text: str, limit: int = 64) -> str:
    """Client-supplied text as it may appear in an error message (a 50 MB name is not echoed back)."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def _validate_request(raw: bytes, header_length: int | None) -> InferenceRequest:
    if len(raw) <= ORJSON_ABOVE_BYTES:
        request: InferenceRequest = _validate(InferenceRequest, raw, header_length)
        return request
    return validate_with_orjson(raw, header_length)


def validate_with_orjson(raw: bytes, header_length: int | None) -> InferenceRequest:
    """orjson parses; pydantic validates the request with each input's `data` set aside (then put back)."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        hint = f" (a body with binary tensor data needs the {HEADER_LENGTH} header)" if header_length is None else ""
        raise ProtocolError(f"invalid request: Invalid JSON: {shorten(str(exc), 120)}{hint}") from None
    inputs = document.get("inputs") if isinstance(document, dict) else None
    data = [i.pop("data", None) if isinstance(i, dict) else None for i in inputs] if isinstance(inputs, list) else []
    try:
        request = InferenceRequest.model_validate(document)
    except ValidationError as err:
        problems = "; ".join(_describe(e) for e in err.errors(include_url=False)[:5])
        raise ProtocolError(f"invalid request: {problems}") from None
    for i, (inp, values) in enumerate(zip(request.inputs, data, strict=True)):
        if values is not None and not isinstance(values, list):
            raise ProtocolError(f"invalid request: inputs[{i}].data: must be an array, got {json_type(values)}")
        inp.data = values
    return request


def wants_binary(parameters: Parameters | None, key: str, default: bool) -> bool:
    """A boolean parameter such as `binary_data` or `binary_data_output`, type-checked."""
    value = (parameters or {}).get(key, default)
    if not isinstance(value, bool):
        raise ProtocolError(f"parameters.{key} must be true or false, got {json_type(value)}")
    return value


def _split_header(body: bytes, header_length: int | None) -> tuple[bytes, memoryview]:
    if header_length is None:
        return body, memoryview(b"")
    if header_length > len(body):
        raise ProtocolError(f"{HEADER_LENGTH} is {header_length} but the body is {len(body)} bytes")
    view = memoryview(body)  # blobs are sliced without copying
    return bytes(view[:header_length]), view[header_length:]


def _validate(
    model: type[InferenceRequest] | type[InferenceResponse], raw: bytes, header_length: int | None
) -> Any:
    try:
        return model.model_validate_json(raw)
    except ValidationError as err:
        errors = err.errors(include_url=False)
        problems = "; ".join(_describe(e) for e in errors[:5])
        if header_length is None and errors[0]["type"] == "json_invalid":
            problems += f" (a body with binary tensor data needs the {HEADER_LENGTH} header)"
        kind = "request" if model is InferenceRequest else "response"
        raise ProtocolError(f"invalid {kind}: {problems}") from None


def _describe(error: Any) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"]).lstrip(".")
    return f"{path}: {error['msg']}" if path else error["msg"]


def check_unique(kind: str, names: list[str]) -> None:
    """Refuse a tensor name that appears twice among the request's inputs (or outputs)."""
    if len(set(names)) == len(names):  # the usual case, without building a Counter
        return
    repeated = [n for n, count in Counter(names).items() if count > 1]
    if repeated:
        raise ProtocolError(f"{kind} '{shorten(repeated[0])}' appears more than once")


def _binary_size(what: str, parameters: Parameters | None) -> int | None:
    size = (parameters or {}).get("binary_data_size")
    if size is None:
        return None
    if type(size) is not int or size < 0:
        raise ProtocolError(f"{what}: parameters.binary_data_size must be a non-negative integer")
    return size


def _split_blobs(tail: memoryview, sizes: list[int | None], kind: str) -> list[memoryview | None]:
    """Blobs follow the JSON header in the order of the tensors that declare a size."""
    total = sum(s for s in sizes if s is not None)
    if total != len(tail):
        raise ProtocolError(
            f"{kind}s declare {total} bytes of binary data but {len(tail)} bytes follow the header"
        )
    blobs: list[memoryview | None] = []
    pos = 0
    for size in sizes:
        blobs.append(None if size is None else tail[pos : pos + size])
        pos += size or 0
    return blobs


# --- responses --------------------------------------------------------------------------------


def encode_response(
    model_name: str,
    model_version: str | None,
    request_id: str | None,
    outputs: dict[str, np.ndarray],
    requested: list[RequestOutput] | None,
    binary_default: bool,
    parameters: dict[str, Any] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """Body and headers: plain JSON, or a JSON header followed by blobs when any output is binary.

    `requested` (the request's `outputs`) selects and orders outputs; each one's
    `parameters.binary_data` overrides `binary_default` (the request's `binary_data_output`); `parameters`
    become the response's own (the codec's facts about the request, e.g. its share of unknown tokens).
    """
    entries: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, binary in _select(outputs, requested, binary_default):
        array = np.asarray(outputs[name])
        datatype = datatype_of(array)
        entry: dict[str, Any] = {"name": name, "shape": list(array.shape), "datatype": datatype}
        if binary:
            blobs.append(encode_binary(array, datatype))
            entry["parameters"] = {"binary_data_size": len(blobs[-1])}
        else:
            entry["data"] = _json_data(f"output '{name}'", array, datatype)
        entries.append(entry)
    # The same document InferenceResponse describes, written by orjson straight from numpy (no per-element
    # Python floats, no model round trip): the JSON path's largest cost for small models (docs/serving.md).
    response: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        response["model_version"] = model_version
    if request_id is not None:
        response["id"] = request_id
    if parameters:
        response["parameters"] = parameters
    response["outputs"] = entries
    header = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, {"Content-Type": "application/json"}
    headers = {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
    return b"".join([header, *blobs]), headers


def _json_data(what: str, array: np.ndarray, datatype: str) -> Any:
    """Flat row-major data for orjson: the array itself where orjson writes it natively, else a list."""
    if array.dtype.kind in "fiub" and array.dtype.isnative and datatype not in ("FP16", "BF16"):
        return np.ascontiguousarray(array).reshape(-1)
    return encode_json(what, array, datatype)


def _select(
    outputs: dict[str, np.ndarray], requested: list[RequestOutput] | None, binary_default: bool
) -> list[tuple[str, bool]]:
    if requested is None:
        return [(name, binary_default) for name in outputs]
    check_outputs(list(outputs), requested)
    return [(o.name, wants_binary(o.parameters, "binary_data", binary_default)) for o in requested]


def check_outputs(names: list[str], requested: list[RequestOutput] | None) -> None:
    """Refuse requested outputs the model does not have; call it before running the model."""
    for out in requested or []:
        if out.name not in names:
            name = shorten(out.name)
            raise ProtocolError(
                f"unknown output '{name}'{suggest(name, names)} "
                f"(outputs: {', '.join(names)})"
            )
        wants_binary(out.parameters, "binary_data", False)  # type-check it early too


def parse_response_body(
    body: bytes, header_length: int | None
) -> tuple[InferenceResponse, dict[str, np.ndarray]]:
    """Client side: the response and its outputs as arrays (JSON or binary-extension body)."""
    header, tail = _split_header(body, header_length)
    response: InferenceResponse = _validate(InferenceResponse, header, header_length)
    sizes = [_binary_size(f"output '{o.name}'", o.parameters) for o in response.outputs]
    blobs = _split_blobs(tail, sizes, "output")
    arrays = {
        o.name: decode_tensor(f"output '{o.name}'", o.datatype, o.shape, o.data, blob)
        for o, blob in zip(response.outputs, blobs, strict=True)
    }
    return response, arrays
