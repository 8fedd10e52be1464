"""The HTTP front end: ``create_app(settings)``, an aiohttp application over a
:class:`~gateway.server.Gateway`.

When it owns its gateway, the gateway's lifetime is one ``cleanup_ctx`` step (see
``gateway.server`` for its order). On shutdown aiohttp stops listening, ``on_shutdown``
marks the server not ready and flushes the batch queues, in-flight requests get up to the
exit timeout (the runner's ``shutdown_timeout``), and only then are sessions closed.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Middleware
from prometheus_client import CollectorRegistry, Counter

from ..core.errors import GatewayError
from ..core.registry import RuntimeFactory
from ..core.types import REQUEST_ID as REQUEST_ID_VAR
from ..core.types import RequestIds
from ..server import Gateway
from ..settings import Settings
from .dashboard import add_dashboard_routes
from .keys import BUDGET, CANARY, DATAPLANE, FEEDBACK, GATEWAY, JOBS, METRICS_REGISTRY, REGISTRY, SETTINGS, SHM, STATS
from .logs import ClientErrorLogFilter
from .loop_routes import add_loop_routes
from .routes import add_routes
from .shm_routes import add_shared_memory_routes
from .trace_routes import add_trace_routes

log = logging.getLogger("tunegate.gateway")
REQUEST_ID = "X-Request-ID"


class AccessLogger(AbstractAccessLogger):
    """One line per request, with the request id that the response also carries."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info('%s "%s %s" %d %d %.2fms id=%s', request.remote, request.method, request.path_qs,
                         response.status, response.body_length, time * 1000,
                         response.headers.get(REQUEST_ID, "-"))


def request_middleware(errors: Counter, ids: RequestIds) -> Middleware:
    """Every request gets an id and every error becomes ``{"error": msg}`` with its status.

    The id is the client's X-Request-ID echoed, or the gateway's next one (shared with gRPC).
    One middleware rather than two: each layer costs every request a coroutine.
    Error answers are counted by status (``tunegate_http_errors_total``).
    """
    @web.middleware
    async def middleware(request: web.Request, handler) -> web.StreamResponse:
        request_id = request.headers.get(REQUEST_ID) or ids.next()
        request_id = request_id[:128]  # a client's id is echoed, but not an unbounded one
        token = REQUEST_ID_VAR.set(request_id)  # request capture files the inputs under it
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                exc.headers[REQUEST_ID] = request_id
                raise
            response = _error_response(request, exc)
        except Exception as exc:  # not CancelledError: a client gone away is not an error to answer
            response = _error_response(request, exc)
        finally:
            REQUEST_ID_VAR.reset(token)
        if response.status >= 400:
            errors.labels(str(response.status)).inc()
        response.headers[REQUEST_ID] = request_id
        return response

    return middleware


def _error_response(request: web.Request, exc: Exception) -> web.Response:
    """The one place errors become ``{"error": msg}`` with their status."""
    if isinstance(exc, web.HTTPException):
        message = exc.text or exc.reason
        if exc.status == 413:
            message = f"request body too large: {message}"
        return web.json_response({"error": message}, status=exc.status)
    status = getattr(exc, "status", None)
    if isinstance(exc, GatewayError) or isinstance(status, int):
        return web.json_response({"error": getattr(exc, "message", str(exc))}, status=status)
    log.exception("unhandled error on %s %s", request.method, request.path)
    return web.json_response({"error": f"internal error: {type(exc).__name__}: {exc}"}, status=500)


def create_app(settings: Settings, *, metrics_registry: CollectorRegistry | None = None,
               runtime_factory: RuntimeFactory | None = None, gateway: Gateway | None = None) -> web.Application:
    """The HTTP front end over ``gateway``; without one, it builds its own and runs it for
    the application's lifetime (one front end, as in tests and ``create_app`` users)."""
    owned = gateway is None
    if gateway is None:
        gateway = Gateway.build(settings, metrics_registry=metrics_registry, runtime_factory=runtime_factory)
    errors = Counter("tunegate_http_errors", "HTTP answers with an error status, by status", ["status"],
                     registry=gateway.metrics)
    app = web.Application(client_max_size=int(settings.max_body_bytes),
                          middlewares=[request_middleware(errors, gateway.request_ids)])
    app[GATEWAY] = gateway
    app[SETTINGS] = settings
    app[STATS] = gateway.book
    app[REGISTRY] = gateway.registry
    app[BUDGET] = gateway.budget
    app[DATAPLANE] = gateway.dataplane
    app[METRICS_REGISTRY] = gateway.metrics
    app[SHM] = gateway.shm
    app[FEEDBACK], app[CANARY], app[JOBS] = gateway.loop.feedback, gateway.loop.canary, gateway.loop.jobs
    add_routes(app)
    add_loop_routes(app)
    add_shared_memory_routes(app)
    add_trace_routes(app)
    add_dashboard_routes(app)
    app.cleanup_ctx.append(_quiet_client_errors_ctx)
    if owned:
        app.cleanup_ctx.append(_gateway_ctx)
        app.on_shutdown.append(_begin_shutdown)
    return app


async def _quiet_client_errors_ctx(app: web.Application) -> AsyncIterator[None]:
    server_log = logging.getLogger("aiohttp.server")
    quiet = ClientErrorLogFilter()
    server_log.addFilter(quiet)
    yield
    server_log.removeFilter(quiet)


async def _gateway_ctx(app: web.Application) -> AsyncIterator[None]:
    async with app[GATEWAY].running():
        yield


async def _begin_shutdown(app: web.Application) -> None:
    app[GATEWAY].begin_shutdown()
