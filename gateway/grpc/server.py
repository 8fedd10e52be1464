"""The gRPC server for one :class:`~gateway.server.Gateway`: the inference service and the
health service on a ``grpc.aio`` server.

:meth:`GrpcServer.bind` takes the port before any model loads (a taken port is told at
once); :meth:`GrpcServer.running` serves until its block ends, then stops taking calls and
gives those in flight up to the exit timeout, while the gateway is still running.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
from grpc_health.v1 import health_pb2_grpc
from tritonclient.grpc import service_pb2_grpc

from ..core.errors import GatewayError
from ..server import Gateway
from .health import Health
from .servicer import InferenceServicer

HEALTH_REFRESH_SECONDS = 1.0  # how soon a health Watch stream sees readiness change


class BindError(GatewayError):
    """grpc could not listen on the address (it does not say why)."""

    exit_code = 2


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class GrpcServer:
    def __init__(self, gateway: Gateway, server: grpc.aio.Server, health: Health, port: int) -> None:
        self.gateway = gateway
        self.server = server
        self.health = health
        self.port = port
        self._follow: asyncio.Task | None = None

    @classmethod
    def bind(cls, gateway: Gateway, host: str, port: int, *, reuse_port: bool = False) -> GrpcServer:
        """A server listening on ``host:port`` (0: any free port), not started yet; call from
        the event loop it will run on. ``reuse_port``: shared with sibling workers."""
        server = grpc.aio.server(options=[
            # Requests bounded like an HTTP body; answers are not (as over HTTP): the client
            # sets what it accepts.
            ("grpc.max_receive_message_length", int(gateway.settings.max_body_bytes)),
            ("grpc.max_send_message_length", -1),
            # grpc sets SO_REUSEPORT by default: a second server would share the port silently.
            # Only ``--workers`` share it, on purpose.
            ("grpc.so_reuseport", int(reuse_port)),
        ])
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(gateway), server)
        health = Health(gateway.dataplane)
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        try:
            bound = server.add_insecure_port(address(host, port))
        except RuntimeError:
            bound = 0
        if not bound:
            raise BindError(f"cannot listen on {address(host, port)} for gRPC")
        return cls(gateway, server, health, bound)

    async def start(self) -> None:
        await self.server.start()
        self._follow = asyncio.create_task(self.health.follow(HEALTH_REFRESH_SECONDS), name="grpc health")

    async def stop(self, grace: float | None) -> None:
        """Stop taking calls; those in flight get ``grace`` seconds, then are cancelled."""
        await self.health.enter_graceful_shutdown()
        if self._follow is not None:
            self._follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow
        await self.server.stop(grace)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[GrpcServer]:
        await self.start()
        try:
            yield self
        finally:
            await self.stop(self.gateway.settings.exit_timeout_seconds)
