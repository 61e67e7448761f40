"""The KServe V2 gRPC service (`inference.GRPCInferenceService`): thin handlers over the shared state.

The same repository, batchers, tokens, limits and metrics as the HTTP routes: both front doors run on
one event loop and call the same checks (validate.py: the codec's inputs, optional inputs, row and
element caps, token ids, NaN/Inf) and the same `submit`. Authorization comes from the
`authorization: Bearer <token>` metadata entry, with the HTTP side's scope: health and server metadata
are open, models need a token, the repository RPCs the admin token. Every failure becomes one gRPC
status through status.py's table.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from dlforge import __version__
from dlforge.serve.batcher import BatcherStopped, QueueFull
from dlforge.serve.grpc.codec import decode_inputs, encode_response, request_header
from dlforge.serve.grpc.proto import grpc_predict_v2_pb2 as pb
from dlforge.serve.grpc.status import Unimplemented, code_of
from dlforge.serve.infer import DECODE_INLINE_BYTES
from dlforge.serve.protocol import ProtocolError
from dlforge.serve.repository import ModelInstance, ModelNotReady
from dlforge.serve.security import check_authorization
from dlforge.serve.state import ServeState, submit
from dlforge.serve.validate import check_inputs, check_request, to_graph

log = logging.getLogger(__name__)
SERVICE = "inference.GRPCInferenceService"  # the protocol's name; our proto package differs (see the .proto)

Context = Any  # grpc.aio.ServicerContext (grpcio ships no type hints)
Handler = Callable[[Any, Context], Awaitable[Any]]


class InferenceService:
    """One method per RPC of the V2 service; `handler()` registers them under the protocol's name."""

    def __init__(self, state: ServeState) -> None:
        self.state = state

    # --- health and metadata -------------------------------------------------------------------

    async def server_live(self, request: pb.ServerLiveRequest, context: Context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: pb.ServerReadyRequest, context: Context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.state.ready())

    async def server_metadata(self, request: pb.ServerMetadataRequest, context: Context) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=self.state.settings.server_name, version=__version__,
                                         extensions=self.state.extensions())

    async def model_ready(self, request: pb.ModelReadyRequest, context: Context) -> pb.ModelReadyResponse:
        try:
            instance = self._model(context, request.name, request.version)
        except ModelNotReady:  # known but not loaded: a plain "no", as Triton answers; unknown stays NOT_FOUND
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=instance.batcher.running)

    async def model_metadata(self, request: pb.ModelMetadataRequest, context: Context) -> pb.ModelMetadataResponse:
        instance = self._model(context, request.name, request.version)
        codec, tensor = instance.codec, pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=instance.name, versions=self.state.repository.versions(instance.name),
            platform=instance.runtime.metadata.platform,
            inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in codec.inputs],
            outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in codec.outputs])

    # --- inference -----------------------------------------------------------------------------

    async def model_infer(self, request: pb.ModelInferRequest, context: Context) -> pb.ModelInferResponse:
        started = time.monotonic()
        instance = self._model(context, request.model_name, request.model_version)
        if not self.state.accepting:  # shutting down: calls in flight finish, new ones go elsewhere (server.py)
            raise BatcherStopped("the server is shutting down; send the call to another instance or retry later")
        try:
            # the same places as HTTP requests take: over them, RESOURCE_EXHAUSTED at once (HTTP's 503)
            with instance.batcher.admitted(1, started + self.state.settings.request_timeout_s):
                response = await self._infer(instance, request, context, started)
        except Exception as exc:
            if isinstance(exc, QueueFull):
                self.state.metrics.shed.labels("grpc", exc.reason).inc()
            self._observe(instance, code_of(exc), started)
            raise
        self._observe(instance, grpc.StatusCode.OK, started)
        return response

    async def _infer(self, instance: ModelInstance, request: pb.ModelInferRequest, context: Context,
                     started: float) -> pb.ModelInferResponse:
        wire = request_header(request)
        signature, codec = instance.signature, instance.codec  # as on the HTTP side (e.g. raw text → token ids)
        check_request(wire, signature)  # names, datatypes, shapes, optional inputs, the row cap: before decoding

        def graph_inputs() -> dict[str, Any]:
            inputs = {t.name: array for t, array in zip(wire.inputs, decode_inputs(request), strict=True)}
            check_inputs(inputs, signature)
            return to_graph(codec, signature, inputs)

        # decoding and the codec's work grow with the request (65k strings to tokenize): big ones leave the loop
        size = request.ByteSize()
        try:
            graph = await asyncio.to_thread(graph_inputs) if size > DECODE_INLINE_BYTES else graph_inputs()
            facts = codec.response_parameters(graph)
            outputs = codec.encode(await submit(self.state, instance, graph, started, context.time_remaining()))
            raw = bool(request.raw_input_contents)
            return encode_response(instance.name, instance.version, request.id, outputs, wire.outputs, raw, facts)
        finally:
            self.state.release_memory_soon(size)

    def _observe(self, instance: ModelInstance, code: grpc.StatusCode, started: float) -> None:
        # The status label holds the gRPC code's name ("OK", "INVALID_ARGUMENT"), HTTP calls hold numbers.
        self.state.metrics.observe_request(instance.name, instance.version, code.name, time.monotonic() - started)

    # --- repository extension (admin token) ----------------------------------------------------

    async def repository_index(self, request: pb.RepositoryIndexRequest,
                               context: Context) -> pb.RepositoryIndexResponse:
        self._admin(context, request.repository_name)
        entry = pb.RepositoryIndexResponse.ModelIndex
        items = [i for i in self.state.repository.index() if i.state == "READY" or not request.ready]
        return pb.RepositoryIndexResponse(models=[entry(name=i.name, version=i.version or "", state=i.state,
                                                        reason=i.reason) for i in items])

    async def repository_model_load(self, request: pb.RepositoryModelLoadRequest,
                                    context: Context) -> pb.RepositoryModelLoadResponse:
        self._admin(context, request.repository_name)
        _no_parameters(request.parameters, allowed=())
        await self.state.repository.load(_model_name(request.model_name))
        self.state.metrics.refresh()
        return pb.RepositoryModelLoadResponse()

    async def repository_model_unload(self, request: pb.RepositoryModelUnloadRequest,
                                      context: Context) -> pb.RepositoryModelUnloadResponse:
        self._admin(context, request.repository_name)
        _no_parameters(request.parameters, allowed=("unload_dependents",))  # dlforge models have no dependents
        await self.state.repository.unload(_model_name(request.model_name))
        self.state.metrics.refresh()
        return pb.RepositoryModelUnloadResponse()

    # --- helpers -------------------------------------------------------------------------------

    def _model(self, context: Context, name: str, version: str) -> ModelInstance:
        check_authorization(_authorization(context), self.state.settings.tokens)
        return self.state.repository.get(_model_name(name), version or None)

    def _admin(self, context: Context, repository_name: str) -> None:
        admin = self.state.settings.admin_token
        if admin is None:
            raise Unimplemented("the repository API is off; start the server with --admin-token to enable it")
        check_authorization(_authorization(context), [admin])
        if repository_name:
            raise ProtocolError(f"repository_name {repository_name!r}: this server has one repository; "
                                "leave it empty")


def _authorization(context: Context) -> str:
    return next((str(value) for key, value in context.invocation_metadata() or () if key == "authorization"), "")


def _model_name(name: str) -> str:
    if not name:
        raise ProtocolError("model name is empty; name the model to use (e.g. model_name: 'digits_cnn')")
    return name


def _no_parameters(parameters: Any, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(parameters) - set(allowed))
    if unknown:
        raise ProtocolError(f"parameters {', '.join(unknown)} are not supported: dlforge loads the packages "
                            "in its repository folder as they are on disk")


@dataclass(frozen=True)
class Undecodable:
    """Request bytes that are not the RPC's protobuf message: the handler answers INVALID_ARGUMENT."""

    reason: str


def _lenient(message: Any) -> Callable[[bytes], Any]:
    """A request deserializer that never raises: grpc would answer a parse error with UNKNOWN and the
    exception's class name; the guarded handler answers it as the client's mistake instead."""

    def parse(data: bytes) -> Any:
        try:
            return message.FromString(data)
        except DecodeError:
            return Undecodable(f"the request is not a valid {message.DESCRIPTOR.name} protobuf message "
                               f"({len(data)} bytes); send the message the V2 .proto declares for this RPC")

    return parse


def _guard(method: Handler) -> Handler:
    """Turn any exception into one gRPC status (the server keeps serving; nothing unexpected leaks a trace)."""

    @functools.wraps(method)
    async def call(request: Any, context: Context) -> Any:
        try:
            if isinstance(request, Undecodable):
                raise ProtocolError(request.reason)
            return await method(request, context)
        except Exception as exc:
            code = code_of(exc)
            message = str(exc)
            if code == grpc.StatusCode.INTERNAL:  # the client gets a reference to the log line, not the exception
                ref = uuid.uuid4().hex[:12]
                log.error("unexpected error in %s (ref %s): %r", method.__name__, ref, exc, exc_info=exc)
                message = f"internal error (ref {ref} in the server log); the server is still running"
            await context.abort(code, message)

    return call


def rpc_table(service: InferenceService) -> dict[str, tuple[Handler, Any, Any]]:
    """RPC name → (method, request message, response message): every RPC the .proto declares."""
    return {
        "ServerLive": (service.server_live, pb.ServerLiveRequest, pb.ServerLiveResponse),
        "ServerReady": (service.server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse),
        "ModelReady": (service.model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse),
        "ServerMetadata": (service.server_metadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse),
        "ModelMetadata": (service.model_metadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse),
        "ModelInfer": (service.model_infer, pb.ModelInferRequest, pb.ModelInferResponse),
        "RepositoryIndex": (service.repository_index, pb.RepositoryIndexRequest, pb.RepositoryIndexResponse),
        "RepositoryModelLoad": (service.repository_model_load, pb.RepositoryModelLoadRequest,
                                pb.RepositoryModelLoadResponse),
        "RepositoryModelUnload": (service.repository_model_unload, pb.RepositoryModelUnloadRequest,
                                  pb.RepositoryModelUnloadResponse),
    }


def handler(state: ServeState) -> grpc.GenericRpcHandler:
    """Every RPC bound to `state`, under the name clients call (`inference.GRPCInferenceService`)."""
    return grpc.method_handlers_generic_handler(SERVICE, {
        name: grpc.unary_unary_rpc_method_handler(_guard(method), request_deserializer=_lenient(request),
                                                  response_serializer=response.SerializeToString)
        for name, (method, request, response) in rpc_table(InferenceService(state)).items()
    })
