"""One Triton endpoint's client, over HTTP or gRPC, behind one small interface.

An endpoint is written ``host:port`` or ``http://host:port`` (Triton's HTTP service, through
``tritonclient.http.aio``) or ``grpc://host:port`` (its gRPC service, through
``tritonclient.grpc.aio``). :class:`EndpointClient` hides what differs between the two, so
the pool in ``endpoints.py`` (balancing, retries, circuits) is written once:

* answers come back in one shape: metadata and config as the dicts Triton's HTTP service
  gives (gRPC's protobuf answers are converted), an infer result with ``as_numpy``;
* failures come back as three exceptions, by what they mean for a retry:
  :class:`ConnectFailed` (no byte of the request reached the server: safe to retry
  elsewhere), :class:`ConnectionLost` (it may have run: never retried) and
  :class:`Refused` (Triton answered with an error, carried as an HTTP status);
  ``TimeoutError`` when no answer came in time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import aiohttp
import numpy as np
import tritonclient.grpc.aio as grpc_aio
import tritonclient.http.aio as http_aio
from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE, KeepAliveOptions
from tritonclient.utils import InferenceServerException

from ..core.errors import LoadError
from ..settings import TritonSettings

Tensor = tuple[str, str, np.ndarray]  # name, v2 datatype, array


class EndpointFailure(Exception):
    """A call to an endpoint failed; the subclass says whether it can be retried."""


class ConnectFailed(EndpointFailure):
    """The endpoint could not be connected to: no byte of the request reached it."""


class ConnectionLost(EndpointFailure):
    """The connection failed once the request may have reached the server."""


class Refused(EndpointFailure):
    """Triton answered with an error (the request reached it)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class InferResult(Protocol):
    def as_numpy(self, name: str) -> np.ndarray | None: ...


class EndpointClient(Protocol):
    protocol: str  # "http" or "grpc"

    async def ready(self) -> bool: ...
    async def metadata(self, model: str, version: str) -> dict[str, Any]: ...
    async def config(self, model: str, version: str) -> dict[str, Any]: ...
    async def infer(self, model_name: str, inputs: Sequence[Tensor], *, model_version: str,
                    outputs: Sequence[str], priority: int = 0, timeout: int | None = None,
                    headers: dict[str, str] | None = None) -> InferResult: ...
    async def close(self) -> None: ...


def connect(url: str, settings: TritonSettings) -> EndpointClient:
    """The client for ``url`` by its scheme. Must run on the event loop (sessions and
    channels bind to it)."""
    scheme, address = split_url(url)
    if scheme == "grpc":
        return GrpcEndpointClient(address, settings)
    return HttpEndpointClient(address, settings)


def split_url(url: str) -> tuple[str, str]:
    """(``"http"`` or ``"grpc"``, ``host:port``); a LoadError for anything else."""
    scheme, sep, address = url.partition("://")
    if not sep:
        scheme, address = "http", url
    if scheme not in ("http", "grpc") or not address or "/" in address or ":" not in address:
        raise LoadError(f"triton endpoint {url!r}: write host:port, http://host:port or grpc://host:port")
    return scheme, address


# ----------------------------------------------------------------------- HTTP
class HttpEndpointClient:
    protocol = "http"

    def __init__(self, address: str, settings: TritonSettings) -> None:
        self._address = address
        self._client = http_aio.InferenceServerClient(address, conn_limit=settings.max_outstanding,
                                                      conn_timeout=settings.request_timeout_seconds)
        # Probes get their own connection: a pool full of slow requests must not delay them.
        self._probe = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=settings.probe_timeout_seconds))

    async def ready(self) -> bool:
        with _http_failures():
            async with self._probe.get(f"http://{self._address}/v2/health/ready") as response:
                await response.read()
                return response.status == 200

    async def metadata(self, model: str, version: str) -> dict[str, Any]:
        with _http_failures():
            return await self._client.get_model_metadata(model, version)

    async def config(self, model: str, version: str) -> dict[str, Any]:
        with _http_failures():
            return await self._client.get_model_config(model, version)

    async def infer(self, model_name: str, inputs: Sequence[Tensor], *, model_version: str,
                    outputs: Sequence[str], priority: int = 0, timeout: int | None = None,
                    headers: dict[str, str] | None = None) -> InferResult:
        tensors = []
        for name, datatype, array in inputs:
            tensor = http_aio.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array, binary_data=True)  # never tensors as JSON
            tensors.append(tensor)
        wanted = [http_aio.InferRequestedOutput(name, binary_data=True) for name in outputs]
        with _http_failures():
            return await self._client.infer(model_name, tensors, model_version=model_version, outputs=wanted,
                                            priority=priority, timeout=timeout, headers=headers)

    async def close(self) -> None:
        await self._probe.close()
        await self._client.close()


@contextlib.contextmanager
def _http_failures() -> Iterator[None]:
    try:
        yield
    except aiohttp.ClientConnectorError as exc:  # raised before any byte was sent
        raise ConnectFailed(f"cannot connect: {exc.os_error or exc}") from None
    except TimeoutError:
        raise
    except (aiohttp.ClientError, ConnectionError) as exc:
        raise ConnectionLost(f"{type(exc).__name__}: {exc}") from None
    except InferenceServerException as exc:
        status = exc.status() or ""
        raise Refused(int(status) if status.isdigit() else 500, exc.message()) from None


# ----------------------------------------------------------------------- gRPC
class GrpcEndpointClient:
    protocol = "grpc"

    def __init__(self, address: str, settings: TritonSettings) -> None:
        keepalive = KeepAliveOptions()
        # gRPC waits up to 2 minutes between reconnects by default; a server back on its port
        # must be reachable by the next readiness probe, so the wait is capped at the interval.
        backoff_ms = min(120_000, max(100, int(settings.health_interval_seconds * 1000)))
        self._probe_timeout = settings.probe_timeout_seconds
        # One channel multiplexes every call; this bounds them as HTTP's connection pool does.
        self._slots = asyncio.Semaphore(settings.max_outstanding)
        self._client = grpc_aio.InferenceServerClient(address, channel_args=[
            ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
            ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
            ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
            ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
            ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
            ("grpc.initial_reconnect_backoff_ms", backoff_ms),
            ("grpc.max_reconnect_backoff_ms", backoff_ms),
        ])

    async def ready(self) -> bool:
        with _grpc_failures():
            return await self._client.is_server_ready(client_timeout=self._probe_timeout)

    async def metadata(self, model: str, version: str) -> dict[str, Any]:
        with _grpc_failures():
            answer = await self._client.get_model_metadata(model, version, as_json=True)
        # Protobuf's JSON writes int64 as strings; Triton's HTTP service writes numbers.
        for tensor in (*answer.get("inputs", ()), *answer.get("outputs", ())):
            tensor["shape"] = [int(d) for d in tensor.get("shape", ())]
        return answer

    async def config(self, model: str, version: str) -> dict[str, Any]:
        with _grpc_failures():
            answer = await self._client.get_model_config(model, version, as_json=True)
        # The config itself, as HTTP gives it (int64 fields stay strings: proto3's JSON form,
        # which json_format.ParseDict reads back exactly).
        return answer.get("config", {})

    async def infer(self, model_name: str, inputs: Sequence[Tensor], *, model_version: str,
                    outputs: Sequence[str], priority: int = 0, timeout: int | None = None,
                    headers: dict[str, str] | None = None) -> InferResult:
        tensors = []
        for name, datatype, array in inputs:
            tensor = grpc_aio.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)  # raw_input_contents: bytes, never typed lists
            tensors.append(tensor)
        wanted = [grpc_aio.InferRequestedOutput(name) for name in outputs]
        async with self._slots:
            with _grpc_failures():
                    return await self._client.infer(model_name, tensors, model_version=model_version,
                                                outputs=wanted, priority=priority, timeout=timeout,
                                                headers=headers)  # gRPC metadata

    async def close(self) -> None:
        await self._client.close()


# gRPC reports a transport failure as UNAVAILABLE, the code Triton also answers with (a model
# or server not ready); grpc-core's own messages tell them apart.
_NOT_CONNECTED = ("failed to connect to all addresses", "DNS resolution failed", "Connection refused")
_LOST = ("Socket closed", "Connection reset", "Broken pipe", "GOAWAY", "Endpoint closing",
         "keepalive watchdog timeout", "Stream removed", "Transport closed")
_HTTP_STATUS = {"INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400,
                "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "NOT_FOUND": 404, "ALREADY_EXISTS": 409,
                "RESOURCE_EXHAUSTED": 429, "UNIMPLEMENTED": 501, "UNAVAILABLE": 503}


@contextlib.contextmanager
def _grpc_failures() -> Iterator[None]:
    try:
        yield
    except InferenceServerException as exc:
        code = (exc.status() or "").removeprefix("StatusCode.")
        message = exc.message() or ""
        if code == "UNAVAILABLE" and any(m in message for m in _NOT_CONNECTED):
            raise ConnectFailed(f"cannot connect: {message}") from None
        if code == "UNAVAILABLE" and any(m in message for m in _LOST):
            raise ConnectionLost(f"UNAVAILABLE: {message}") from None
        if code == "DEADLINE_EXCEEDED":
            raise TimeoutError(message) from None
        raise Refused(_HTTP_STATUS.get(code, 500), message) from None


__all__ = ["ConnectFailed", "ConnectionLost", "EndpointClient", "EndpointFailure", "GrpcEndpointClient",
           "HttpEndpointClient", "InferResult", "Refused", "Tensor", "connect", "split_url"]
