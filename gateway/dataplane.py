"""What the server can do, without HTTP: the v2 protocol's operations over the registry."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from model_repo import config_to_dict

from . import __version__
from .codec import InferRequest, InferResponse
from .errors import BadRequest, GatewayError, QueueFull, QueueTimeout
from .registry import Registry
from .stats import StatsBook

EXTENSIONS = ["binary_tensor_data", "model_configuration", "model_repository", "statistics"]


class DataPlane:
    def __init__(self, registry: Registry, book: StatsBook) -> None:
        self.registry = registry
        self.book = book

    # ---------------------------------------------------------------- health
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self.registry.ready

    def server_metadata(self) -> dict[str, Any]:
        return {"name": "tunegate", "version": __version__, "extensions": EXTENSIONS}

    # ---------------------------------------------------------------- models
    def model_metadata(self, model: str, version: str | None = None) -> dict[str, Any]:
        served = self.registry.route(model, version)
        record = self.registry.record(model)
        signature = served.signature
        return {
            "name": model,
            "versions": [str(v) for v in record.serving],
            "platform": served.runtime.platform,
            "inputs": [t.to_v2(signature.batching) for t in signature.inputs],
            "outputs": [t.to_v2(signature.batching) for t in signature.outputs],
            "parameters": served.runtime.parameters(),
        }

    def model_ready(self, model: str, version: str | None = None) -> bool:
        return self.registry.route(model, version).runtime.ready

    def model_config(self, model: str, version: str | None = None) -> dict[str, Any]:
        return config_to_dict(self.registry.route(model, version).config)

    # ------------------------------------------------------------- inference
    async def infer(self, model: str, version: str | None, request: InferRequest) -> InferResponse:
        with self.registry.lease(model, version) as served:
            started = time.perf_counter_ns()
            try:
                feeds, rows = served.signature.check(request)
                wanted = ([o.name for o in request.outputs] if request.outputs is not None
                          else served.signature.output_names)
                served.signature.check_outputs(wanted)
                feeds = served.runtime.prepare(feeds)
                outputs, timing = await served.batcher.submit(feeds, rows)
            except asyncio.CancelledError:
                served.stats.record_failure(time.perf_counter_ns() - started, "CANCELED")
                raise
            except GatewayError as exc:
                served.stats.record_failure(time.perf_counter_ns() - started, _reason(exc))
                raise
            served.stats.record_success(rows, time.perf_counter_ns() - started, timing)
        binary = {o.name: o.binary for o in request.outputs or ()}
        return InferResponse(
            model_name=model,
            model_version=str(served.version),
            id=request.id,
            outputs=[(name, outputs[name],
                      request.binary_output if binary.get(name) is None else bool(binary[name]))
                     for name in wanted],
        )

    # ------------------------------------------------------------ statistics
    def statistics(self, model: str | None = None, version: str | None = None) -> dict[str, Any]:
        if model is None:
            served = self.registry.serving()
        elif version:
            served = [self.registry.route(model, version)]
        else:
            served = list(self.registry.record(model).serving.values())
        return {"model_stats": [s.stats.to_triton(s.model, s.version) for s in served]}

    # ------------------------------------------------------------ repository
    def repository_index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        return self.registry.index(ready_only)

    async def load(self, model: str, parameters: dict[str, Any] | None = None) -> None:
        unsupported = sorted(k for k in (parameters or {}) if k == "config" or k.startswith("file:"))
        if unsupported:
            raise BadRequest(f"load parameters {unsupported} are not supported: publish a version instead")
        await self.registry.load(model)

    async def unload(self, model: str) -> None:
        await self.registry.unload(model)


def _reason(exc: GatewayError) -> str:
    if isinstance(exc, QueueFull | QueueTimeout):
        return "REJECTED"
    if exc.status == 500:
        return "BACKEND"
    return "OTHER"
