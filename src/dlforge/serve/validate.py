"""Request validation against one model, shared by every front door (HTTP routes, gRPC, Ray replicas).

Order matters for cost: names, datatypes and shapes are checked against the model's signature (the
task codec's inputs, which clients send), and the declared shape against the row and element caps,
before any tensor data is decoded; the values (empty dimensions, token ids, NaN/Inf) right after.
What the codec hands the graph (e.g. token ids from text) is checked by the same rules before the
engine sees it. Protocol-level only: no HTTP or gRPC objects here; gRPC builds an `InferenceRequest`
and calls `check_request`, `check_inputs` and `to_graph` like the HTTP side.
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
from dlforge.taskapi import Codec

Tensors = dict[str, np.ndarray]


def row_bytes(specs: list[MetadataTensor] | tuple[MetadataTensor, ...]) -> int:
    """Decoded bytes of one row of every tensor (dynamic dims other than the batch count as 1)."""
    total = 0
    for spec in specs:
        per_row = math.prod(max(d, 1) for d in spec.shape[1:])
        total += per_row * max(DATATYPES[spec.datatype].size, 8)
    return total


@dataclass(frozen=True)
class ModelSignature:
    """What one loaded model accepts: its declared inputs and outputs, value rules and the row cap."""

    inputs: tuple[MetadataTensor, ...]
    outputs: tuple[str, ...]
    rules: InputRules = field(default_factory=InputRules)
    max_rows: int = 1 << 16  # rows one request may carry
    optional: frozenset[str] = frozenset()  # inputs a request may leave out

    @classmethod
    def of(cls, codec: Codec, rules: InputRules) -> ModelSignature:
        """What clients of this task's codec send and get (e.g. text, not token ids)."""
        return cls(tuple(codec.inputs), tuple(o.name for o in codec.outputs), rules, optional=codec.optional)

    def limited(self, max_rows: int) -> ModelSignature:
        return replace(self, max_rows=max_rows)

    def row_bytes(self) -> int:
        return row_bytes(self.inputs)


def parse_infer(body: bytes, header_length: int | None, signature: ModelSignature,
                max_json_bytes: int = MAX_JSON_BYTES) -> tuple[InferenceRequest, Tensors]:
    """A V2 body (JSON or binary extension) → the request and its checked input arrays by name."""
    request, blobs = parse_request_header(body, header_length, max_json_bytes)
    check_request(request, signature)
    arrays = {inp.name: decode_input(inp, blob) for inp, blob in zip(request.inputs, blobs, strict=True)}
    check_inputs(arrays, signature)
    return request, arrays


def check_inputs(inputs: Tensors, signature: ModelSignature) -> None:
    """The values of decoded inputs: empty dimensions, token ids out of the vocabulary, NaN/Inf."""
    for name, array in inputs.items():
        check_values(f"input '{shorten(name)}'", array, signature.rules)


def to_graph(codec: Codec, signature: ModelSignature, inputs: Tensors) -> Tensors:
    """The codec's graph inputs for checked client inputs; arrays the codec made (token ids from text…)
    go through the same value rules, so no codec can hand the engine an empty or out-of-range tensor."""
    graph = codec.decode(inputs)
    made = {name: array for name, array in graph.items() if not any(array is a for a in inputs.values())}
    check_inputs(made, signature)
    return graph


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
    missing = sorted(set(known) - signature.optional - {i.name for i in request.inputs})
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
