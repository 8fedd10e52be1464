"""The aiohttp application: ``create_app(settings)``.

Start-up and clean-up are paired in ``cleanup_ctx``: the registry (initial load in the
background, so liveness answers while models load; readiness waits for it), then the
repository watcher. On shutdown aiohttp stops listening, ``on_shutdown`` marks the server
not ready and flushes the batch queues, in-flight requests get up to the exit timeout
(the runner's ``shutdown_timeout``), and only then are sessions closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Middleware
from model_repo import Repository, RepositoryWatcher
from prometheus_client import CollectorRegistry, Counter, Gauge

from .budget import MemoryBudget
from .dataplane import DataPlane
from .errors import GatewayError, StartupError
from .keys import BUDGET, DATAPLANE, METRICS_REGISTRY, REGISTRY, SETTINGS, STATS
from .logs import ClientErrorLogFilter
from .loop import REQUEST_ID as REQUEST_ID_VAR
from .loop import setup_loop
from .metrics import build_registry
from .registry import Registry, RuntimeFactory
from .rest import add_routes
from .runtime.endpoints import TRITON_FLEET, TritonFleet
from .runtime.triton import runtime_factory as triton_aware_factory
from .settings import Settings
from .stats import StatsBook

log = logging.getLogger("tunegate.gateway")
REQUEST_ID = "X-Request-ID"


class AccessLogger(AbstractAccessLogger):
    """One line per request, with the request id that the response also carries."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info('%s "%s %s" %d %d %.2fms id=%s', request.remote, request.method, request.path_qs,
                         response.status, response.body_length, time * 1000,
                         response.headers.get(REQUEST_ID, "-"))


def request_middleware(errors: Counter) -> Middleware:
    """Every request gets an id and every error becomes ``{"error": msg}`` with its status.

    The id is the client's X-Request-ID echoed, or a random per-process prefix and a
    counter (unique like a uuid4, without a call into the kernel's random source per
    request). One middleware rather than two: each layer costs every request a coroutine.
    Error answers are counted by status (``tunegate_http_errors_total``).
    """
    prefix = secrets.token_hex(8)
    counter = itertools.count(1)

    @web.middleware
    async def middleware(request: web.Request, handler) -> web.StreamResponse:
        request_id = request.headers.get(REQUEST_ID) or f"{prefix}{next(counter):016x}"
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
               runtime_factory: RuntimeFactory | None = None) -> web.Application:
    repo = Repository(settings.repo)
    book = StatsBook()
    fleet = TritonFleet()  # Triton endpoint pools, shared by every model forwarded to them
    registry = Registry(repo, settings, book, runtime_factory or triton_aware_factory(fleet))
    budget = MemoryBudget(int(settings.decode_budget_bytes))
    metrics = build_registry(
        book, lambda: [(s.model, s.version, s.runtime.platform, s.runtime.provider) for s in registry.serving()],
        metrics_registry)
    errors = Counter("tunegate_http_errors", "HTTP answers with an error status, by status", ["status"],
                     registry=metrics)
    Gauge("tunegate_decode_memory_bytes", "Decode budget held by requests being read and decoded",
          registry=metrics).set_function(lambda: budget.used)
    app = web.Application(client_max_size=int(settings.max_body_bytes),
                          middlewares=[request_middleware(errors)])
    app[TRITON_FLEET] = fleet
    app[SETTINGS] = settings
    app[STATS] = book
    app[REGISTRY] = registry
    app[BUDGET] = budget
    app[DATAPLANE] = DataPlane(registry, book)
    app[METRICS_REGISTRY] = metrics
    add_routes(app)
    app.cleanup_ctx.append(_quiet_client_errors_ctx)
    app.cleanup_ctx.append(_fleet_ctx)  # first in, last out: closed after the registry drains
    app.cleanup_ctx.append(_registry_ctx)
    app.cleanup_ctx.append(_watcher_ctx)
    setup_loop(app, app[METRICS_REGISTRY])  # after the registry's step: its clean-up runs first
    app.on_shutdown.append(_begin_shutdown)
    return app


async def _quiet_client_errors_ctx(app: web.Application) -> AsyncIterator[None]:
    server_log = logging.getLogger("aiohttp.server")
    quiet = ClientErrorLogFilter()
    server_log.addFilter(quiet)
    yield
    server_log.removeFilter(quiet)


async def _fleet_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[TRITON_FLEET].close()


async def _registry_ctx(app: web.Application) -> AsyncIterator[None]:
    registry = app[REGISTRY]
    root = registry.repo.root
    if not await asyncio.to_thread(root.is_dir):
        raise GatewayError(f"model repository {root} is not a directory")
    async with registry.running():
        if app[SETTINGS].exit_on_error:
            await registry.started.wait()
            failed = registry.failures()
            if failed:
                raise StartupError("exit_on_error: " + "; ".join(failed))
        yield


async def _watcher_ctx(app: web.Application) -> AsyncIterator[None]:
    settings, registry = app[SETTINGS], app[REGISTRY]
    if settings.model_control != "poll":
        yield
        return
    # The first snapshot is taken now; versions published from here on arrive as events
    # (the initial load may see some of them too: reconcile is idempotent).
    watcher = await asyncio.to_thread(RepositoryWatcher, registry.repo)
    task = asyncio.create_task(_poll(watcher, registry, settings.poll_interval_seconds), name="repository watcher")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _poll(watcher: RepositoryWatcher, registry: Registry, interval: float) -> None:
    await registry.started.wait()
    while True:
        await asyncio.sleep(interval)
        started = time.monotonic()
        try:
            events = await asyncio.to_thread(watcher.poll)
        except Exception:  # a transient file-system error must not stop hot reload for good
            log.exception("repository poll failed; retrying")
            continue
        if events:
            log.info("repository changed: %s", ", ".join(f"{e.change.value} {e.model}"
                                                           + (f"/{e.version}" if e.version else "") for e in events))
            await registry.apply(events)
        log.debug("poll took %.1f ms", (time.monotonic() - started) * 1000)


async def _begin_shutdown(app: web.Application) -> None:
    app[REGISTRY].begin_shutdown()
