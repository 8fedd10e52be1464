"""Errors raised by the gateway; each carries the HTTP status it is answered with.

One middleware (``app.request_middleware``) turns these, model_repo's errors (which carry a
``status`` too) and aiohttp's own HTTP errors into ``{"error": msg}``; anything else is a
bug and becomes a 500 with its message logged, while the server keeps serving::

    GatewayError (500)
    ├── BadRequest (400)            malformed body, wrong shape or datatype, unknown output
    │   └── BinaryDataError (400)   Triton binary extension: sizes or header length wrong
    ├── Unauthorized (401)          a control route without the configured API key
    ├── PayloadTooLarge (413)       a request that could never fit the decode budget
    ├── ModelNotFound (404)         no such model in the repository
    ├── VersionNotFound (404)       no such version, or not available under the policy
    ├── JobNotFound (404)           no fine-tune job with that id for that model
    ├── Conflict (409)              a fine-tune job or canary already running for the model
    ├── ClientClosedRequest (499)   the client went away before sending its whole body
    ├── QueueFull (429)             the model's bounded queue is full: retry later
    ├── ModelNotReady (503)         not loaded (yet), failed to load, or unloading
    ├── ServerNotReady (503)        starting up or shutting down
    ├── QueueTimeout (503)          waited in the queue longer than the model's timeout
    ├── BudgetExceeded (503)        requests being decoded hold the whole decode budget
    ├── StartupError (500)          exit_on_error: a model failed its initial load
    ├── LoadError (400)             a version could not be loaded (bad file, bad config)
    └── InferenceError (500)        the runtime failed on a request that passed validation
"""

from __future__ import annotations


class GatewayError(Exception):
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(GatewayError):
    status = 400


class BinaryDataError(BadRequest):
    pass


class Unauthorized(GatewayError):
    status = 401


class PayloadTooLarge(GatewayError):
    status = 413


class ModelNotFound(GatewayError):
    status = 404


class VersionNotFound(GatewayError):
    status = 404


class JobNotFound(GatewayError):
    status = 404


class Conflict(GatewayError):
    status = 409


class ClientClosedRequest(GatewayError):
    # nginx's code: nobody reads the answer, but the request is counted as the client's doing.
    status = 499


class QueueFull(GatewayError):
    status = 429


class ModelNotReady(GatewayError):
    status = 503


class ServerNotReady(GatewayError):
    status = 503


class QueueTimeout(GatewayError):
    status = 503


class BudgetExceeded(GatewayError):
    status = 503


class StartupError(GatewayError):
    exit_code = 1


class LoadError(GatewayError):
    # Triton answers a failed explicit load with 400: the model, not the server, is at fault.
    status = 400


class InferenceError(GatewayError):
    status = 500
