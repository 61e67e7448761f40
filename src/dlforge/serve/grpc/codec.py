"""ModelInferRequest / ModelInferResponse ↔ numpy, through the same checks as the HTTP side.

A request's tensors come either all in `raw_input_contents` (little-endian bytes, the layout of the
binary tensor data extension, decoded by tensors.py) or each in its typed `contents` field. The
response mirrors the request: raw in → `raw_output_contents` out (what tritonclient reads), typed in
→ typed contents out. FP16 and BF16 have no typed field, so a response holding one is raw.
Every client mistake raises `ProtocolError` (→ INVALID_ARGUMENT) naming the tensor at fault.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dlforge.serve.grpc.proto import grpc_predict_v2_pb2 as pb
from dlforge.serve.protocol import (
    MAX_ELEMENTS,
    InferenceRequest,
    ProtocolError,
    RequestInput,
    RequestOutput,
    check_shape,
    check_unique,
    datatype_of,
    decode_tensor,
    get_datatype,
    shorten,
)
from dlforge.serve.tensors import encode_binary

# datatype → (typed contents field, the numpy dtype its values arrive in)
CONTENTS: dict[str, tuple[str, Any]] = {
    "BOOL": ("bool_contents", np.bool_),
    "INT8": ("int_contents", np.int32),
    "INT16": ("int_contents", np.int32),
    "INT32": ("int_contents", np.int32),
    "INT64": ("int64_contents", np.int64),
    "UINT8": ("uint_contents", np.uint32),
    "UINT16": ("uint_contents", np.uint32),
    "UINT32": ("uint_contents", np.uint32),
    "UINT64": ("uint64_contents", np.uint64),
    "FP32": ("fp32_contents", np.float32),
    "FP64": ("fp64_contents", np.float64),
    "BYTES": ("bytes_contents", object),
}
FIELDS = sorted({field for field, _ in CONTENTS.values()})


def decode_request(
    request: pb.ModelInferRequest, max_elements: int = MAX_ELEMENTS
) -> tuple[InferenceRequest, list[np.ndarray], bool]:
    """The request as the protocol's wire type, one array per input (request order), and whether it was raw."""
    wire = request_header(request)
    return wire, decode_inputs(request, max_elements), bool(request.raw_input_contents)


def request_header(request: pb.ModelInferRequest) -> InferenceRequest:
    """The request as the protocol's wire type, tensor data not yet decoded: names, datatypes and shapes
    can be checked against the model (validate.check_request) before any array is built."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise ProtocolError(f"raw_input_contents has {len(raw)} entries but the request has "
                            f"{len(request.inputs)} inputs (one entry per input, in the same order)")
    check_unique("input", [i.name for i in request.inputs])
    check_unique("output", [o.name for o in request.outputs])
    # model_construct: the fields were typed by protobuf already; the checks that matter follow in validate.py
    return InferenceRequest.model_construct(
        id=request.id or None,
        parameters=None,
        inputs=[RequestInput.model_construct(name=t.name, shape=list(t.shape), datatype=t.datatype, parameters=None,
                                             data=None) for t in request.inputs],
        outputs=[RequestOutput.model_construct(name=o.name, parameters=None) for o in request.outputs] or None,
    )


def decode_inputs(request: pb.ModelInferRequest, max_elements: int = MAX_ELEMENTS) -> list[np.ndarray]:
    """One array per input, in request order, from raw_input_contents or each tensor's typed contents."""
    raw = request.raw_input_contents
    arrays = []
    for index, tensor in enumerate(request.inputs):
        what = f"input '{shorten(tensor.name)}'"
        if raw and tensor.HasField("contents"):
            raise ProtocolError(f"{what}: has typed contents although the request uses raw_input_contents")
        if raw:
            arrays.append(decode_tensor(what, tensor.datatype, list(tensor.shape), None, raw[index], max_elements))
        else:
            arrays.append(decode_contents(what, tensor.datatype, list(tensor.shape), tensor.contents, max_elements))
    return arrays


def decode_contents(what: str, datatype: str, shape: list[int], contents: pb.InferTensorContents,
                    max_elements: int = MAX_ELEMENTS) -> np.ndarray:
    """One tensor from its typed contents field, checked for field, count and range."""
    dt = get_datatype(datatype, what)
    count = check_shape(what, shape, max_elements)
    if datatype not in CONTENTS:
        raise ProtocolError(f"{what}: {datatype} has no typed contents field; send it in raw_input_contents")
    field, carrier = CONTENTS[datatype]
    stray = [f for f in FIELDS if f != field and len(getattr(contents, f))]
    if stray:
        raise ProtocolError(f"{what}: {datatype} data goes in contents.{field}, not contents.{stray[0]}")
    values = getattr(contents, field)
    if len(values) != count:
        raise ProtocolError(f"{what}: shape needs {count} elements but contents.{field} has {len(values)}")
    if datatype == "BYTES":
        flat = np.empty(count, dtype=object)
        flat[:] = list(values)
        return flat.reshape(shape)
    flat = np.array(values, dtype=carrier)
    if dt.dtype != carrier and count:  # INT8/INT16/UINT8/UINT16 travel in 32-bit fields
        info = np.iinfo(dt.dtype)
        if flat.min() < info.min or flat.max() > info.max:
            raise ProtocolError(f"{what}: value out of range for {datatype}")
    return flat.astype(dt.dtype).reshape(shape)


def encode_response(model_name: str, model_version: str, request_id: str, outputs: dict[str, np.ndarray],
                    requested: list[RequestOutput] | None, raw: bool,
                    parameters: dict[str, Any] | None = None) -> pb.ModelInferResponse:
    """The response with the requested outputs (all, in the model's order, when none were named), and
    `parameters` (the codec's facts about the request) as InferParameters."""
    names = [o.name for o in requested] if requested else list(outputs)
    arrays = [np.asarray(outputs[name]) for name in names]
    datatypes = [datatype_of(a) for a in arrays]
    raw = raw or any(d not in CONTENTS for d in datatypes)  # raw for one output means raw for all
    response = pb.ModelInferResponse(model_name=model_name, model_version=model_version, id=request_id)
    for key, value in (parameters or {}).items():
        field = {bool: "bool_param", int: "int64_param", float: "double_param"}.get(type(value), "string_param")
        setattr(response.parameters[key], field, value if field != "string_param" else str(value))
    for name, array, datatype in zip(names, arrays, datatypes, strict=True):
        tensor = response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        if raw:
            response.raw_output_contents.append(encode_binary(array, datatype))
        elif datatype == "BYTES":
            tensor.contents.bytes_contents.extend(v if isinstance(v, bytes) else str(v).encode()
                                                  for v in array.reshape(-1).tolist())
        else:
            getattr(tensor.contents, CONTENTS[datatype][0]).extend(array.reshape(-1).tolist())
    return response
