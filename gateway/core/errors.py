"""Errors raised by the gateway; each carries the HTTP status and the gRPC status code it
is answered with (the code by name, as Triton maps them, so this module needs no grpc).

Each front end turns these, model_repo's errors (which carry a ``status`` too) and its own
protocol errors into its error answer (``{"error": msg}`` over HTTP, a status and message
over gRPC); anything else is a bug, answered 500/INTERNAL with its message logged, while
the server keeps serving::

    GatewayError                  500 INTERNAL
    ├── BadRequest                400 INVALID_ARGUMENT    malformed body, wrong shape or datatype
    │   └── BinaryDataError       400 INVALID_ARGUMENT    binary tensor sizes or header length wrong
    ├── Unauthorized              401 UNAUTHENTICATED     a control call without the API key
    ├── PayloadTooLarge           413 RESOURCE_EXHAUSTED  could never fit the decode budget
    ├── ModelNotFound             404 NOT_FOUND           no such model in the repository
    ├── VersionNotFound           404 NOT_FOUND           no such version, or not under the policy
    ├── JobNotFound               404 NOT_FOUND           no fine-tune job with that id
    ├── Conflict                  409 FAILED_PRECONDITION a job or canary already running
    ├── ClientClosedRequest       499 CANCELLED           the client went away mid-request
    ├── QueueFull                 429 RESOURCE_EXHAUSTED  the model's bounded queue is full
    ├── ModelNotReady             503 UNAVAILABLE         not loaded (yet), failed, or unloading
    ├── ServerNotReady            503 UNAVAILABLE         starting up or shutting down
    ├── QueueTimeout              503 UNAVAILABLE         waited in the queue past its timeout (Triton's answer)
    ├── BudgetExceeded            503 RESOURCE_EXHAUSTED  the decode budget is held by others
    ├── StartupError              500 INTERNAL            exit_on_error: a model failed to load
    ├── LoadError                 400 INVALID_ARGUMENT    a version could not be loaded
    └── InferenceError            500 INTERNAL            the runtime failed on a valid request

``brief`` shows a client's value inside a message without letting it grow the message.
"""

from __future__ import annotations

import reprlib
from typing import Any


class GatewayError(Exception):
    status = 500
    grpc_status = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(GatewayError):
    status = 400
    grpc_status = "INVALID_ARGUMENT"


class BinaryDataError(BadRequest):
    pass


class Unauthorized(GatewayError):
    status = 401
    grpc_status = "UNAUTHENTICATED"


class PayloadTooLarge(GatewayError):
    status = 413
    grpc_status = "RESOURCE_EXHAUSTED"


class ModelNotFound(GatewayError):
    status = 404
    grpc_status = "NOT_FOUND"


class VersionNotFound(GatewayError):
    status = 404
    grpc_status = "NOT_FOUND"


class JobNotFound(GatewayError):
    status = 404
    grpc_status = "NOT_FOUND"


class Conflict(GatewayError):
    status = 409
    grpc_status = "FAILED_PRECONDITION"


class ClientClosedRequest(GatewayError):
    # nginx's code: nobody reads the answer, but the request is counted as the client's doing.
    status = 499
    grpc_status = "CANCELLED"


class QueueFull(GatewayError):
    status = 429
    grpc_status = "RESOURCE_EXHAUSTED"


class ModelNotReady(GatewayError):
    status = 503
    grpc_status = "UNAVAILABLE"


class ServerNotReady(GatewayError):
    status = 503
    grpc_status = "UNAVAILABLE"


class QueueTimeout(GatewayError):
    # Triton answers "Request timeout expired" as UNAVAILABLE (503): DEADLINE_EXCEEDED is the
    # client's own gRPC deadline, which a server's queue policy is not.
    status = 503
    grpc_status = "UNAVAILABLE"


class BudgetExceeded(GatewayError):
    status = 503
    grpc_status = "RESOURCE_EXHAUSTED"


class LeaderUnavailable(GatewayError):
    """A call only the loop's leader carries out got no answer from it (none elected yet)."""

    status = 503
    grpc_status = "UNAVAILABLE"


class StartupError(GatewayError):
    exit_code = 1


class LoadError(GatewayError):
    # Triton answers a failed explicit load with 400: the model, not the server, is at fault.
    status = 400
    grpc_status = "INVALID_ARGUMENT"


class InferenceError(GatewayError):
    status = 500
    grpc_status = "INTERNAL"


def error_type(name: str) -> type[GatewayError]:
    """The error class called ``name`` (one process re-raising another's error), else the base."""
    pending = [GatewayError]
    while pending:
        cls = pending.pop()
        if cls.__name__ == name:
            return cls
        pending += cls.__subclasses__()
    return GatewayError


def brief(value: Any) -> str:
    """A client's value in a message: repr, but bounded in length and depth (a 5000-deep
    list would make plain repr raise RecursionError)."""
    if isinstance(value, str) and len(value) <= 64:  # names, on every request: the cheap way
        return repr(value)
    shown = reprlib.Repr()
    shown.maxlevel, shown.maxstring, shown.maxother = 2, 64, 64
    return shown.repr(value)
