"""Start and stop the gRPC server inside the HTTP server's event loop (from the app's lifespan).

grpc.aio runs on the running asyncio loop (uvloop included), so gRPC calls share the batchers with
HTTP and a batch can mix rows from both. Limits: messages over the body limit are refused by gRPC
with RESOURCE_EXHAUSTED before they reach a handler. With `--workers N` each worker binds the same
port with SO_REUSEPORT and the kernel spreads connections; with one process the option is off, so a
port already in use fails loudly instead of being shared with a stranger.

Overload: gRPC core keeps calls that have arrived but that the (one-threaded) grpc.aio server has not
picked up yet in a pending queue, and past its default soft limit of 1,000 it cancels them at random
(a burst of 2,000 ModelInfer + 2,000 ServerLive calls on 4 channels: ~160 + ~620 CANCELLED, health
calls included, before any handler ran, so nothing was counted). The limit is raised to MAX_PENDING here,
so calls reach the handlers, where admission answers the ones over the model's in-flight bound with
RESOURCE_EXHAUSTED at once and counts them (dlforge_shed_total), as HTTP answers 503. Past MAX_PENDING
gRPC core still cancels: a bound on memory, not an admission policy.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from dlforge.errors import UserError
from dlforge.serve.grpc.service import handler
from dlforge.serve.state import ServeState

log = logging.getLogger(__name__)
REFUSE_S = 0.5  # at shutdown, new calls are refused (UNAVAILABLE) this long before gRPC core stops
MAX_PENDING = 16384  # calls arrived and not yet handed to a handler; gRPC core cancels beyond (its default: 1,000)


class GrpcBindError(UserError):
    """The gRPC port could not be bound (in use, or not allowed)."""


async def start_grpc(state: ServeState) -> grpc.aio.Server:
    """A started gRPC server on settings.host:settings.grpc_port serving the V2 service."""
    s = state.settings
    options = [
        ("grpc.max_receive_message_length", s.max_body_bytes),
        ("grpc.max_send_message_length", -1),  # answers are bounded by what the model returns
        ("grpc.so_reuseport", 1 if s.processes > 1 else 0),
        ("grpc.server.max_pending_requests", MAX_PENDING),  # soft = hard: no random early cancellation
        ("grpc.server.max_pending_requests_hard_limit", MAX_PENDING),
    ]
    server = grpc.aio.server(options=options)
    server.add_generic_rpc_handlers((handler(state),))
    address = f"[{s.host}]:{s.grpc_port}" if ":" in s.host else f"{s.host}:{s.grpc_port}"
    try:
        state.grpc_port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise GrpcBindError(f"cannot serve gRPC on {address}: {exc} (is the port in use?)") from None
    await server.start()
    log.info("gRPC (KServe V2) on %s, port %d", s.host, state.grpc_port)
    return server


async def stop_grpc(server: grpc.aio.Server, grace_s: float) -> None:
    """Stop taking calls; calls in flight get `grace_s` seconds to finish (the batchers drain after).

    Called once the state no longer accepts: for REFUSE_S first, new ModelInfer calls are answered UNAVAILABLE
    ("shutting down") by the handler, so clients turn elsewhere before gRPC core stops, which cancels every
    call it has received but not yet handed to a handler (under load, 14 of 16 clients' next calls)."""
    await asyncio.sleep(REFUSE_S)
    await server.stop(grace_s)
