"""Tracing inference requests with OpenTelemetry, and Triton's trace settings over it.

:class:`Tracing` is what the front ends and the DataPlane see. Off (no exporter configured,
level OFF, or the trace count used up), a request costs one attribute check,
``tracing.active``: no span object, no context lookup, and OpenTelemetry is not even
imported. On, a sampled request gets a :class:`~.tracing_spans.RequestTrace`: an ``infer``
span (the client's W3C ``traceparent`` as its parent) with ``receive``, ``decode``,
``queue`` and ``encode`` children, and the batch that ran it a ``batch`` span (linking every
traced request it merged) with a ``compute`` child, whose context goes on to Triton when
the gateway forwards (:data:`TRACEPARENT`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from .trace_state import TraceState
from .tracing_context import TRACEPARENT
from .tracing_settings import TracingSettings

log = logging.getLogger("tunegate.tracing")



class Tracing:
    def __init__(self, settings: TracingSettings) -> None:
        self.settings = settings
        self.state = TraceState.of(settings)
        self.active = False  # the one check a request pays when tracing is off
        self._tracer: Any = None  # an OpenTelemetry Tracer, once a provider is in use
        self._provider: Any = None
        self._offset_ns = 0

    def start(self) -> None:
        """Build the exporter's provider when an endpoint is configured (no I/O yet)."""
        if self.settings.endpoint:
            from .tracing_export import build_provider  # OpenTelemetry only when it is used
            self.use(build_provider(self.settings))

    def use(self, provider: Any) -> None:
        """Trace through ``provider`` (an SDK ``TracerProvider``); tests pass one with an
        in-memory exporter."""
        self._provider = provider
        self._tracer = provider.get_tracer("tunegate")
        self._offset_ns = time.time_ns() - time.perf_counter_ns()  # the spans' one clock
        self._refresh()

    async def close(self) -> None:
        """Export what is left and stop the exporter."""
        self.active = False
        if self._provider is not None:
            provider, self._provider, self._tracer = self._provider, None, None
            await asyncio.to_thread(provider.shutdown)

    def _refresh(self) -> None:
        self.active = self._tracer is not None and self.state.any_on

    # ------------------------------------------------------------ requests
    def begin(self, model: str, carrier: Mapping[str, str] | None, protocol: str):
        """The request's trace, or None when this request is not sampled. Call only when
        ``active``. ``carrier``: the request's headers (or gRPC metadata) for traceparent."""
        sampler = self.state.sampler(model)
        if not sampler.take():
            return None
        if sampler.remaining == 0:
            self._refresh()
        from .tracing_spans import RequestTrace
        return RequestTrace(self._tracer, model, carrier, protocol, sampler.tensors, self._offset_ns)

    # ------------------------------------------------------------ settings
    def settings_of(self, model: str | None = None) -> dict[str, Any]:
        return self.state.show(model)

    def update(self, changes: dict[str, Any], model: str | None = None) -> dict[str, Any]:
        self.state.update(changes, model)
        self._refresh()
        if self._tracer is None and self.state.any_on and self.state.values.get("trace_level") != ["OFF"]:
            log.info("trace settings changed, but no tracing endpoint is configured: no span is made")
        return self.state.show(model)


def open_batch(batch: Sequence[Any], rows: int, started_ns: int, merged_ns: int) -> Any:
    """The batch's spans (a ``BatchTrace``) when any request in it is traced, else None.
    ``batch``: the batcher's requests, each with ``trace`` and ``enqueued_ns``."""
    traced = [(r.trace, r.enqueued_ns) for r in batch if r.trace is not None]
    if not traced:
        return None
    from .tracing_spans import BatchTrace
    return BatchTrace(traced, len(batch), rows, started_ns, merged_ns)


__all__ = ["TRACEPARENT", "Tracing", "TracingSettings", "open_batch"]
