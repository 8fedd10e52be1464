"""What the server can do, without HTTP: the v2 protocol's operations over the registry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from model_repo import ModelConfig, config_to_dict
from model_repo.config import response_cache_enabled

from .. import __version__
from .cache import ResponseCache, request_key
from .classification import ClassifiedOutput, LabelBook, classify
from .classification import check as check_classification
from .types import InferRequest, InferResponse
from .errors import GatewayError, QueueFull, QueueTimeout
from .load_overrides import apply_overrides, parse_overrides
from .registry import Registry
from .scheduling import Schedule
from .signature import Signature
from .stats import StatsBook
from .log_settings import LogSettings
from .tracing import Tracing

EXTENSIONS = ["binary_tensor_data", "classification", "model_configuration", "model_repository",
              "schedule_policy", "statistics"]


class DataPlane:
    def __init__(self, registry: Registry, book: StatsBook) -> None:
        self.extensions = list(EXTENSIONS)  # the composition root adds what it turns on
        self.registry = registry
        self.book = book
        # The loop's hooks: every answered infer (model, version, ok, latency ns, request,
        # response or None) and extra metadata parameters per model (canary, jobs).
        self.observers: list[Callable[..., None]] = []
        self.parameter_sources: list[Callable[[str], dict[str, Any]]] = []
        # Triton's trace and logging extensions: what they read and change.
        self.tracing = Tracing(registry.settings.tracing)  # off until the composition root starts it
        self.logs = LogSettings(registry.settings.log_level)
        # Triton's response cache, for models whose config turns it on (None: no cache bytes).
        size = registry.settings.response_cache_bytes
        self.cache = ResponseCache(size, live=lambda served: served.runtime.ready) if size else None
        self.labels = LabelBook(registry.repo.model_dir)  # classification labels, per version

    # ---------------------------------------------------------------- health
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self.registry.ready

    def server_metadata(self) -> dict[str, Any]:
        return {"name": "tunegate", "version": __version__, "extensions": self.extensions}

    # ---------------------------------------------------------------- models
    def model_metadata(self, model: str, version: str | None = None) -> dict[str, Any]:
        served = self.registry.route(model, version, split=False)
        record = self.registry.record(model)
        signature = served.signature
        parameters = served.runtime.parameters()
        for source in self.parameter_sources:
            parameters.update(source(model))
        if served.lineage:
            parameters["lineage"] = served.lineage
        return {
            "name": model,
            "versions": [str(v) for v in record.serving],
            "platform": served.runtime.platform,
            "inputs": [t.to_v2(signature.batching) for t in signature.inputs],
            "outputs": [t.to_v2(signature.batching) for t in signature.outputs],
            "parameters": parameters,
        }

    def model_ready(self, model: str, version: str | None = None) -> bool:
        # No canary draw: readiness does not depend on it, and infer draws once for itself.
        return self.registry.route(model, version, split=False).runtime.ready

    def input_spec(self, model: str, version: str | None = None) -> Signature:
        """What the model's inputs may be, to check a request against before decoding its
        data (404/503 when the model cannot answer)."""
        return self.registry.route(model, version, split=False).signature

    def model_config_proto(self, model: str, version: str | None = None) -> ModelConfig:
        """The model's config as Triton's ``ModelConfig`` message (what gRPC answers)."""
        return self.registry.route(model, version).config

    def model_config(self, model: str, version: str | None = None) -> dict[str, Any]:
        return config_to_dict(self.registry.route(model, version).config)

    # ------------------------------------------------------------- inference
    async def infer(self, model: str, version: str | None, request: InferRequest, trace=None) -> InferResponse:
        """``trace``: the request's RequestTrace when it is traced (tracing.py), else None."""
        # A client's id (parameters.client_id) keeps it on one side of a traffic split.
        client = request.parameters.get("client_id") if request.parameters else None
        with self.registry.lease(model, version, None if client is None else str(client)) as served:
            started = time.perf_counter_ns()
            try:
                schedule = Schedule.of(request.parameters)  # priority and timeout (µs), Triton's names
                signature = served.signature
                feeds, rows = signature.check(request)
                classified: list[ClassifiedOutput] = []
                if request.outputs is None:
                    wanted = signature.output_names
                else:
                    wanted = [o.name for o in request.outputs]
                    signature.check_outputs(wanted)
                    classified = [o for o in request.outputs if type(o) is ClassifiedOutput]
                    for output in classified:
                        check_classification(output, next(t.datatype for t in signature.outputs
                                                          if t.name == output.name))
                feeds = served.runtime.prepare(feeds)
                if trace is not None:
                    trace.served(served.version)
                if self.cache is not None and response_cache_enabled(served.config):
                    outputs, timing = await self._through_cache(served, request, feeds, rows, schedule, trace)
                else:
                    outputs, timing = await served.batcher.submit(feeds, rows, priority=schedule.priority,
                                                                  timeout_us=schedule.timeout_us, trace=trace)
            except asyncio.CancelledError:
                served.stats.record_failure(time.perf_counter_ns() - started, "CANCELED")
                raise
            except GatewayError as exc:
                elapsed = time.perf_counter_ns() - started
                served.stats.record_failure(elapsed, _reason(exc))
                if exc.status >= 500:  # the version's fault, not the client's: a canary's evidence
                    self._observe(model, served.version, False, elapsed, request, None)
                raise
            elapsed = time.perf_counter_ns() - started
            if timing is None:  # answered from the cache: no queue, no compute
                served.stats.record_cached(elapsed)
            else:
                served.stats.record_success(rows, elapsed, timing)
        if request.outputs is None:
            answers = [(name, outputs[name], request.binary_output) for name in wanted]
        else:
            shown = await self._classify(served, classified, outputs) if classified else outputs
            answers = [(o.name, shown[o.name], request.binary_output if o.binary is None else bool(o.binary))
                       for o in request.outputs]
        response = InferResponse(model_name=model, model_version=str(served.version), id=request.id,
                                 outputs=answers, lineage_id=served.lineage.get("id"))
        if self.observers:
            self._observe(model, served.version, True, elapsed, request, (feeds, outputs))
        return response

    async def _through_cache(self, served, request: InferRequest, feeds: dict, rows: int,
                             schedule: Schedule, trace=None) -> tuple[dict, Any]:
        """The outputs from the response cache (timing None), else from the model, then kept.
        Lookup and insertion times are Triton's cache_hit / cache_miss durations."""
        cache = self.cache
        assert cache is not None
        started = time.perf_counter_ns()
        key = request_key(request.inputs)
        outputs = cache.get(served, key)
        if outputs is not None:
            served.stats.cache_hit.add(time.perf_counter_ns() - started)
            return outputs, None
        looked_up = time.perf_counter_ns() - started
        outputs, timing = await served.batcher.submit(feeds, rows, priority=schedule.priority,
                                                      timeout_us=schedule.timeout_us, trace=trace)
        inserting = time.perf_counter_ns()
        cache.put(served, key, outputs)
        served.stats.cache_miss.add(looked_up + time.perf_counter_ns() - inserting)
        return outputs, timing

    async def _classify(self, served, classified: list[ClassifiedOutput], outputs: dict) -> dict:
        """The outputs with each classified one replaced by its top classes (Triton's BYTES)."""
        labels = await self.labels.labels(served, served.model, served.config)
        batching = served.signature.batching
        return {**outputs, **{o.name: classify(outputs[o.name], o.class_count, batching, labels.get(o.name))
                              for o in classified}}

    def _observe(self, model: str, version: int, ok: bool, elapsed_ns: int, request: InferRequest,
                 answer: tuple[dict, dict] | None) -> None:
        for observer in self.observers:
            observer(model, version, ok, elapsed_ns, request, answer)

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
        """Load or reload ``model``; Triton's overrides (``config``, ``file:<path>``) are first
        checked and published through the repository (``load_overrides.py``)."""
        overrides = await asyncio.to_thread(parse_overrides, model, parameters) if parameters else None
        if overrides is not None and not overrides.empty:
            await apply_overrides(self.registry.repo, self.registry.settings, model, overrides)
        await self.registry.load(model)

    async def unload(self, model: str) -> None:
        await self.registry.unload(model)


def _reason(exc: GatewayError) -> str:
    if isinstance(exc, QueueFull | QueueTimeout):
        return "REJECTED"
    if exc.status == 500:
        return "BACKEND"
    return "OTHER"
