"""A fleet of Triton endpoints: health checks, least-outstanding balancing, circuits, retries.

Endpoints speak HTTP or gRPC, each its own (``triton_clients.py``); the pool treats both
alike. One :class:`EndpointPool` per distinct endpoint list, shared by every model and version
that forwards to it (``TritonFleet`` hands them out), so the outstanding-request counts
and circuit states are the endpoints' own, not one model's view of them.

An endpoint's circuit opens when ``failure_threshold`` calls in a row fail at the
transport level (refused, reset, timed out) or when a readiness probe fails; an open
endpoint takes no traffic until a probe finds it ready again. A call is retried on
another endpoint only when it failed to connect, i.e. no byte of the request reached a
server: anything later may have run the model already, and inference is not assumed to be
idempotent (feedback capture and stats would count it twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..core.errors import BadRequest, GatewayError, InferenceError
from ..settings import TritonSettings
from .triton_clients import ConnectFailed, ConnectionLost, EndpointClient, EndpointFailure, Refused, connect, split_url

log = logging.getLogger("tunegate.triton")
T = TypeVar("T")


class NoHealthyEndpoint(GatewayError):
    status = 503


class UpstreamError(GatewayError):
    """Triton could not be reached, dropped the connection, or failed the request."""

    status = 502


class UpstreamTimeout(GatewayError):
    status = 504


@dataclass(eq=False)
class Endpoint:
    url: str  # as configured: host:port, http://host:port or grpc://host:port
    client: EndpointClient
    outstanding: int = 0
    failures: int = 0  # consecutive transport failures
    open: bool = False  # circuit open: no traffic until a readiness probe succeeds
    last_error: str = ""

    def describe(self) -> dict[str, Any]:
        return {"url": self.url, "protocol": self.client.protocol, "state": "open" if self.open else "closed",
                "outstanding": self.outstanding, "consecutive_failures": self.failures,
                "last_error": self.last_error}


@dataclass(eq=False)
class EndpointPool:
    settings: TritonSettings
    endpoints: list[Endpoint]
    _turn: itertools.count = field(default_factory=itertools.count)
    _health: asyncio.Task | None = None

    @classmethod
    def create(cls, settings: TritonSettings) -> EndpointPool:
        """Must run on the event loop (HTTP sessions and gRPC channels bind to it)."""
        for url in settings.endpoints:  # every address checked before any client exists
            split_url(url)
        pool = cls(settings, [Endpoint(url, connect(url, settings)) for url in settings.endpoints])
        pool._health = asyncio.create_task(pool._probe_forever(), name="triton health checks")
        return pool

    # ------------------------------------------------------------- choosing
    def pick(self, exclude: set[int] = frozenset()) -> Endpoint:
        """The closed-circuit endpoint with the fewest requests in flight; ties rotate."""
        candidates = [e for i, e in enumerate(self.endpoints) if not e.open and i not in exclude]
        if not candidates:
            raise NoHealthyEndpoint(self._why_none())
        least = min(e.outstanding for e in candidates)
        tied = [e for e in candidates if e.outstanding == least]
        return tied[next(self._turn) % len(tied)]

    def _why_none(self) -> str:
        parts = [f"{e.url}: {'circuit open' if e.open else 'already tried'}"
                 + (f" ({e.last_error})" if e.last_error else "") for e in self.endpoints]
        return "no healthy Triton endpoint: " + "; ".join(parts)

    # --------------------------------------------------------------- calling
    async def call(self, fn: Callable[[EndpointClient], Awaitable[T]], what: str) -> T:
        """Run ``fn`` against the best endpoint; retry elsewhere only if it never connected."""
        tried: set[int] = set()
        attempts = 1 + self.settings.retries
        while True:
            endpoint = self.pick(tried)
            tried.add(self.endpoints.index(endpoint))
            endpoint.outstanding += 1
            try:
                async with asyncio.timeout(self.settings.request_timeout_seconds):
                    result = await fn(endpoint.client)
            except ConnectFailed as exc:  # before any byte was sent
                self._failed(endpoint, str(exc))
                if len(tried) < attempts and len(tried) < len(self.endpoints):
                    continue
                raise UpstreamError(f"{what}: Triton at {endpoint.url} is unreachable ({endpoint.last_error})"
                                    f"{self._tried(tried)}") from None
            except TimeoutError:
                self._failed(endpoint, f"no answer within {self.settings.request_timeout_seconds:g}s")
                raise UpstreamTimeout(f"{what}: Triton at {endpoint.url} did not answer within "
                                      f"{self.settings.request_timeout_seconds:g}s (not retried: the request "
                                      "may have run)") from None
            except ConnectionLost as exc:  # bytes may have reached it
                self._failed(endpoint, str(exc))
                raise UpstreamError(f"{what}: Triton at {endpoint.url} failed mid-request "
                                    f"({exc}); not retried: the request may have run") from None
            except Refused as exc:
                raise _mapped(exc, what, endpoint.url) from None
            else:
                endpoint.failures = 0
                return result
            finally:
                endpoint.outstanding -= 1

    def _tried(self, tried: set[int]) -> str:
        if len(tried) < 2:
            return ""
        return "; also tried " + ", ".join(self.endpoints[i].url for i in sorted(tried)[:-1])

    def _failed(self, endpoint: Endpoint, error: str) -> None:
        endpoint.failures += 1
        endpoint.last_error = error
        if not endpoint.open and endpoint.failures >= self.settings.failure_threshold:
            self._open(endpoint, f"{endpoint.failures} failures in a row")

    def _open(self, endpoint: Endpoint, why: str) -> None:
        endpoint.open = True
        log.warning("Triton endpoint %s: circuit open (%s: %s)", endpoint.url, why, endpoint.last_error)

    # ---------------------------------------------------------------- health
    async def probe(self, endpoint: Endpoint) -> bool:
        try:
            async with asyncio.timeout(self.settings.probe_timeout_seconds):
                ready = await endpoint.client.ready()
            error = "" if ready else "not ready"
        except TimeoutError:
            ready, error = False, f"readiness probe: no answer within {self.settings.probe_timeout_seconds:g}s"
        except (EndpointFailure, OSError) as exc:
            ready, error = False, f"readiness probe failed: {exc}"
        if ready:
            if endpoint.open:
                log.info("Triton endpoint %s: ready again, circuit closed", endpoint.url)
            endpoint.open, endpoint.failures = False, 0
        else:
            endpoint.last_error = error
            if not endpoint.open:
                self._open(endpoint, "readiness probe")
        return ready

    async def probe_all(self) -> None:
        await asyncio.gather(*(self.probe(e) for e in self.endpoints))

    async def _probe_forever(self) -> None:
        while True:
            await self.probe_all()
            await asyncio.sleep(self.settings.health_interval_seconds)

    async def close(self) -> None:
        if self._health is not None:
            self._health.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health
        for endpoint in self.endpoints:
            await endpoint.client.close()


def _mapped(exc: Refused, what: str, url: str) -> GatewayError:
    """Triton answered with an error: the request reached it, so never retried."""
    message = f"{what}: Triton at {url}: {exc.message}"
    if 400 <= exc.status < 500:
        return BadRequest(message)
    if exc.status == 503:
        return UpstreamError(message)
    return InferenceError(message)


class TritonFleet:
    """The endpoint pools of one gateway, by endpoint list; closed with the app."""

    def __init__(self) -> None:
        self._pools: dict[tuple, EndpointPool] = {}

    def pool(self, settings: TritonSettings) -> EndpointPool:
        key = (tuple(settings.endpoints), settings.model_dump_json(exclude={"model_name", "gateway_batching",
                                                                            "ready_timeout_seconds"}))
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = EndpointPool.create(settings)
        return pool

    async def close(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.close()

