"""The one place an exception becomes a gRPC status and message.

``core.errors`` classes name their code (``grpc_status``); model_repo's errors carry an HTTP
``status`` only, mapped as Triton maps them. Anything else is a bug: INTERNAL, with the
exception logged, while the server keeps serving. ``asyncio.CancelledError`` is not an
``Exception``: a client's cancel or deadline passes through untouched.
"""

from __future__ import annotations

import logging

import grpc

from ..core.errors import GatewayError

log = logging.getLogger("tunegate.gateway.grpc")

BY_HTTP_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}


class NotAvailable(GatewayError):
    """A protocol feature this server does not have."""

    status = 501
    grpc_status = "UNIMPLEMENTED"


def status_of(exc: Exception, what: str) -> tuple[grpc.StatusCode, str]:
    """The code and message to answer ``exc`` with; ``what`` names the call for the log."""
    if isinstance(exc, GatewayError):
        return grpc.StatusCode[exc.grpc_status], exc.message
    status = getattr(exc, "status", None)
    if isinstance(status, int):  # model_repo's errors: their message is meant for the client
        return BY_HTTP_STATUS.get(status, grpc.StatusCode.INTERNAL), getattr(exc, "message", str(exc))
    log.exception("unhandled error in %s", what)
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"
