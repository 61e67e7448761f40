"""The one mapping from error kind to gRPC status code (the gRPC twin of app.py's HTTP table).

Same kinds, same meaning: a client mistake is INVALID_ARGUMENT (HTTP 400), an unknown model NOT_FOUND
(404), no token UNAUTHENTICATED (401), a wrong one PERMISSION_DENIED (403), a full queue
RESOURCE_EXHAUSTED (HTTP answers 503 + Retry-After; gRPC has a code of its own for load shedding), a
model that is not loaded UNAVAILABLE (503), a missed deadline DEADLINE_EXCEEDED (504), a package that
fails to load FAILED_PRECONDITION (400 on HTTP: the files, not the request, must change). Messages over
the size limit are refused by gRPC itself with RESOURCE_EXHAUSTED before any handler runs.
"""

from __future__ import annotations

import grpc

from dlforge.serve.batcher import BatcherStopped, DeadlineExceeded, QueueFull
from dlforge.serve.protocol import ProtocolError
from dlforge.serve.repository import ModelLoadFailed, ModelNotFound, ModelNotReady
from dlforge.serve.security import AuthError

_CODES: list[tuple[type[BaseException], grpc.StatusCode]] = [
    (ProtocolError, grpc.StatusCode.INVALID_ARGUMENT), (ModelLoadFailed, grpc.StatusCode.FAILED_PRECONDITION),
    (ModelNotFound, grpc.StatusCode.NOT_FOUND), (QueueFull, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (ModelNotReady, grpc.StatusCode.UNAVAILABLE), (BatcherStopped, grpc.StatusCode.UNAVAILABLE),
    (DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
]
_AUTH = {401: grpc.StatusCode.UNAUTHENTICATED, 403: grpc.StatusCode.PERMISSION_DENIED}


class Unimplemented(Exception):
    """An RPC this server does not offer as configured (e.g. the repository API without an admin token)."""


def code_of(exc: BaseException) -> grpc.StatusCode:
    """The status code for an exception; anything unexpected is INTERNAL."""
    if isinstance(exc, AuthError):
        return _AUTH.get(exc.status, grpc.StatusCode.PERMISSION_DENIED)
    if isinstance(exc, Unimplemented):
        return grpc.StatusCode.UNIMPLEMENTED
    return next((code for kind, code in _CODES if isinstance(exc, kind)), grpc.StatusCode.INTERNAL)


def kinds() -> list[type[BaseException]]:
    """The error kinds mapped here (a test checks they are the HTTP table's)."""
    return [kind for kind, _ in _CODES] + [AuthError]
