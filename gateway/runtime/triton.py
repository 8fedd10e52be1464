"""The Triton backend: a version's requests are forwarded to Triton servers.

Loading waits until some endpoint serves the version, then takes the model's metadata and
config from Triton (what it really serves) after checking them against the repository's
``config.pbtxt``. Each endpoint is Triton's HTTP or gRPC service (``endpoints.py``);
tensors travel as raw bytes either way (HTTP's binary extension, gRPC's raw contents), never
as JSON. Unless ``triton.gateway_batching`` is set, the gateway does not merge requests
(Triton does): each request is forwarded as it comes, with up to ``max_outstanding`` in
flight per endpoint.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from google.protobuf import json_format
from model_repo import ModelConfig

from ..core.batching import BatchPolicy
from ..core.scheduling import BATCH_SCHEDULE
from ..core.tracing import TRACEPARENT
from ..core.errors import GatewayError, LoadError
from ..settings import RuntimeSettings
from ..core.signature import Signature
from .base import Runtime
from .endpoints import EndpointPool, TritonFleet
from .triton_clients import EndpointClient


class TritonRuntime(Runtime):
    platform = "triton"

    def __init__(self, model: str, version: int, config: ModelConfig, settings: RuntimeSettings,
                 fleet: TritonFleet) -> None:
        super().__init__(model, version, config, settings)
        self.triton = settings.triton
        self.remote_name = self.triton.model_name or model
        self._fleet = fleet
        self._pool: EndpointPool | None = None
        self._remote_platform = ""
        if not self.triton.endpoints:
            raise LoadError(f"{model} version {version}: runtime kind 'triton' needs triton.endpoints")

    @property
    def concurrency(self) -> int:
        return len(self.triton.endpoints) * self.triton.max_outstanding

    @property
    def provider(self) -> str:
        return "triton"

    def parameters(self) -> dict[str, Any]:
        params: dict[str, Any] = {"execution_provider": "triton", "triton_model": self.remote_name,
                                  "triton_platform": self._remote_platform}
        if self._pool is not None:
            params["triton_endpoints"] = [e.describe() for e in self._pool.endpoints]
        return params

    def batch_policy(self, default_max_queue_size: int) -> BatchPolicy:
        if self.triton.gateway_batching:
            return super().batch_policy(default_max_queue_size)
        return BatchPolicy(max_batch_size=0, max_queue_size=default_max_queue_size)

    # ------------------------------------------------------------------ load
    async def load(self) -> None:
        self._pool = self._fleet.pool(self.triton)
        what = f"{self.model} version {self.version}"
        deadline = time.monotonic() + self.triton.ready_timeout_seconds
        while True:
            await self._pool.probe_all()
            try:  # Triton answers metadata only for a version at ready state
                metadata, config = await self._pool.call(self._describe, what)
                break
            except GatewayError as exc:
                if time.monotonic() >= deadline:
                    raise LoadError(f"{what}: Triton does not serve {self.remote_name!r} version "
                                    f"{self.version}: {exc.message}") from None
            await asyncio.sleep(min(0.5, self.triton.health_interval_seconds))
        remote = ModelConfig()
        json_format.ParseDict(config, remote, ignore_unknown_fields=True)
        self._check(Signature.from_config(remote))
        self._remote_platform = metadata.get("platform") or remote.backend or remote.platform
        # Triton's own view of the model is what clients are shown (auto-completed fields too).
        self.config, self.signature = remote, Signature.from_config(remote)
        self.ready = True

    async def _describe(self, client: EndpointClient) -> tuple[dict, dict]:
        version = str(self.version)
        return await client.metadata(self.remote_name, version), await client.config(self.remote_name, version)

    def _check(self, remote: Signature) -> None:
        """The repository's config.pbtxt is the contract; refuse a Triton model that differs."""
        mine = self.signature
        if remote.max_batch_size != mine.max_batch_size or remote.inputs != mine.inputs or \
                remote.outputs != mine.outputs:
            def show(s: Signature) -> str:
                io = [f"{t.name}:{t.datatype}{list(t.dims)}" for t in (*s.inputs, *s.outputs)]
                return f"max_batch_size {s.max_batch_size}, tensors {io}"
            raise LoadError(f"{self.model} version {self.version}: Triton serves {self.remote_name!r} as "
                            f"{show(remote)}; config.pbtxt says {show(mine)}")

    # --------------------------------------------------------------- predict
    async def predict(self, inputs: dict[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        if self._pool is None:
            raise LoadError(f"{self.model} version {self.version} is not loaded")
        tensors = [(meta.name, meta.datatype, inputs[meta.name]) for meta in self.signature.inputs]
        wanted = list(outputs)
        schedule = BATCH_SCHEDULE.get()  # the client's priority and timeout, for Triton's own queue
        traceparent = TRACEPARENT.get()  # the batch's compute span when traced: Triton's spans join the trace
        headers = {"traceparent": traceparent} if traceparent else None
        result = await self._pool.call(
            lambda c: c.infer(self.remote_name, tensors, model_version=str(self.version), outputs=wanted,
                              priority=schedule.priority, timeout=schedule.timeout_us or None, headers=headers),
            f"{self.model} version {self.version}")
        answer = {}
        for name in outputs:
            array = result.as_numpy(name)
            if array is None:
                raise GatewayError(f"{self.model} version {self.version}: Triton's answer lacks output {name!r}")
            answer[name] = array
        return answer

    async def unload(self) -> None:
        # The pool is shared with other versions and models: the fleet closes it with the app.
        self.ready = False
        self._pool = None


__all__ = ["TritonRuntime"]
