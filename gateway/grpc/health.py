"""The standard ``grpc.health.v1`` service, following the server's readiness: SERVING for
the whole server ("") and for ``inference.GRPCInferenceService`` while the DataPlane is
ready (models loaded, not shutting down), NOT_SERVING otherwise. Kubernetes' gRPC probes
ask for "" by default."""

from __future__ import annotations

import asyncio

from grpc_health.v1 import health, health_pb2

from ..core.dataplane import DataPlane

SERVICES = ("", "inference.GRPCInferenceService")


class Health(health.aio.HealthServicer):
    def __init__(self, dataplane: DataPlane) -> None:
        super().__init__()
        self.dataplane = dataplane

    async def refresh(self) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if self.dataplane.ready() \
            else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in SERVICES:
            await self.set(service, status)

    async def Check(self, request, context):
        await self.refresh()  # a probe sees readiness now, not as of the last refresh
        return await super().Check(request, context)

    async def follow(self, interval: float) -> None:
        """Refresh every ``interval`` seconds, so Watch streams see readiness change."""
        while True:
            await self.refresh()
            await asyncio.sleep(interval)
