"""Request validation against one model, shared by every front-end (HTTP today; gRPC, Ray Serve next).

Order matters for cost: names, datatypes and shapes are checked against the model's signature, and
the declared shape against the row and element caps, before any tensor data is decoded; the values
(empty dimensions, token ids, NaN/Inf) right after. Protocol-level only: no HTTP objects here, so
another front-end builds an `InferenceRequest` (or hands over a V2 body) and calls the same functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from dlforge.export.inputs import InputRules, check_values
from dlforge.registry import suggest
from dlforge.serve.protocol import (
    DATATYPES,
    MAX_JSON_BYTES,
    InferenceRequest,
    MetadataTensor,
    ProtocolError,
    check_outputs,
    decode_input,
    parse_request_header,
    shorten,
)
from dlforge.serve.runtime import RuntimeMetadata

Tensors = dict[str, np.ndarray]


@dataclass(frozen=True)
class ModelSignature:
    """What one loaded model accepts: its declared inputs and outputs, value rules and the row cap."""

    inputs: tuple[MetadataTensor, ...]
    outputs: tuple[str, ...]
    rules: InputRules = field(default_factory=InputRules)
    max_rows: int = 1 << 16  # rows one request may carry

    @classmethod
    def of(cls, metadata: RuntimeMetadata, rules: InputRules) -> ModelSignature:
        return cls(tuple(metadata.inputs), tuple(o.name for o in metadata.outputs), rules)

    def limited(self, max_rows: int) -> ModelSignature:
        return replace(self, max_rows=max_rows)

    def row_bytes(self) -> int:
        """Decoded bytes of one row of every input (dynamic dims other than the batch count as 1)."""
        total = 0
        for spec in self.inputs:
            per_row = math.prod(max(d, 1) for d in spec.shape[1:])
            total += per_row * max(DATATYPES[spec.datatype].size, 8)
        return total


def parse_infer(body: bytes, header_length: int | None, signature: ModelSignature,
                max_json_bytes: int = MAX_JSON_BYTES) -> tuple[InferenceRequest, Tensors]:
    """A V2 body (JSON or binary extension) → the request and its checked input arrays by name."""
    request, blobs = parse_request_header(body, header_length, max_json_bytes)
    check_request(request, signature)
    arrays = {}
    for inp, blob in zip(request.inputs, blobs, strict=True):
        array = decode_input(inp, blob)
        check_values(f"input '{inp.name}'", array, signature.rules)
        arrays[inp.name] = array
    return request, arrays


def check_request(request: InferenceRequest, signature: ModelSignature) -> None:
    """Names, datatypes, shapes and the row cap, before any data is decoded."""
    known = {t.name: t for t in signature.inputs}
    for inp in request.inputs:
        spec = known.get(inp.name)
        if spec is None:
            name, names = shorten(inp.name), list(known)
            raise ProtocolError(f"unknown input '{name}'{suggest(name, names)} (inputs: {', '.join(names)})")
        _check_against(spec, inp.datatype, inp.shape)
        if inp.shape and inp.shape[0] > signature.max_rows:
            raise ProtocolError(f"input '{inp.name}': {inp.shape[0]} rows is over this model's limit of "
                                f"{signature.max_rows} rows per request; split the request")
    missing = sorted(set(known) - {i.name for i in request.inputs})
    if missing:
        raise ProtocolError(f"missing input(s): {', '.join(missing)}")
    check_outputs(list(signature.outputs), request.outputs)


def _check_against(spec: MetadataTensor, datatype: str, shape: list[int]) -> None:
    name = spec.name
    if datatype != spec.datatype:
        raise ProtocolError(f"input '{name}': datatype must be {spec.datatype}, got {shorten(datatype)}")
    fits = len(shape) == len(spec.shape) and all(want in (-1, got) for want, got in zip(spec.shape, shape, strict=True))
    if not fits:
        raise ProtocolError(f"input '{name}': shape {shorten(str(shape))} does not match {spec.shape} (-1 = any size)")
