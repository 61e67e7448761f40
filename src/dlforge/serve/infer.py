"""One V2 infer call, from body bytes to response bytes: the routed handler and the ASGI fast path share it.

Neither HTTP object nor framework here: the caller has checked the bearer token, hands over how to read the
body (within the request deadline) and the binary-extension header's value, and sends what comes back.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable

from dlforge.serve.batcher import DeadlineExceeded
from dlforge.serve.protocol import encode_response, parse_header_length, wants_binary
from dlforge.serve.security import body_too_late
from dlforge.serve.state import ServeState
from dlforge.serve.validate import parse_infer, to_graph

# Bodies above this are decoded on a worker thread, so the event loop keeps answering (health, small
# requests) meanwhile; below it the thread hop would cost more than the decode.
DECODE_INLINE_BYTES = 64 << 10


async def answer_infer(state: ServeState, model: str, version: str | None, header_length: str | None,
                       read_body: Callable[[], Awaitable[bytes]], started: float) -> tuple[bytes, dict[str, str]]:
    """Response body and headers for one infer request to `model` (`version`: None for the default).

    One timer covers the request: the body must arrive within `Settings.body_timeout_s` (else 408), then the
    answer within the request deadline (504)."""
    s = state.settings
    deadline = started + s.request_timeout_s
    # Overloaded? Say so before reading (and paying for) the body.
    instance = state.repository.get(model, version)
    reading = True
    try:
        with instance.batcher.admitted(1, deadline):
            async with asyncio.timeout(started + s.body_timeout_s) as timer:
                body = await read_body()
                reading = False
                timer.reschedule(deadline)
                return await _answer(state, model, version, header_length, body, deadline)
    except TimeoutError:
        if reading:
            raise body_too_late(s.body_timeout_s) from None
        raise DeadlineExceeded(f"the request did not finish within {s.request_timeout_s:.3g} s") from None


async def _answer(state: ServeState, model: str, version: str | None, header_length: str | None, body: bytes,
                  deadline: float) -> tuple[bytes, dict[str, str]]:
    try:
        return await _decode_and_run(state, model, version, header_length, body, deadline)
    finally:
        state.release_memory_soon(len(body))


async def _decode_and_run(state: ServeState, model: str, version: str | None, header_length: str | None,
                          body: bytes, deadline: float) -> tuple[bytes, dict[str, str]]:
    length = parse_header_length(header_length)
    # Look the instance up again after the body read: a reload may have swapped it meanwhile.
    instance = state.repository.get(model, version)
    big = len(body) > DECODE_INLINE_BYTES
    limit = state.settings.max_json_bytes
    if big:
        request, inputs = await asyncio.to_thread(parse_infer, body, length, instance.signature, limit)
    else:
        request, inputs = parse_infer(body, length, instance.signature, limit)
    binary_default = wants_binary(request.parameters, "binary_data_output", False)
    codec = instance.codec  # the task's codec: client tensors → graph tensors and back (e.g. text → token ids)
    # the codec's work grows with the request (tokenizing 65k strings takes seconds): big ones leave the loop
    graph = await asyncio.to_thread(to_graph, codec, instance.signature, inputs) if big else \
        to_graph(codec, instance.signature, inputs)
    facts = codec.response_parameters(graph)  # before the batcher: it may hand the arrays on
    outputs = codec.encode(await instance.batcher.submit(graph, deadline=deadline))
    encode = functools.partial(encode_response, instance.name, instance.version, request.id, outputs,
                               request.outputs, binary_default, facts)
    return await asyncio.to_thread(encode) if big else encode()
