"""The spans of one traced request and of the batch that ran it (OpenTelemetry API).

Every time is a ``perf_counter_ns`` reading (the batcher's clock) plus one offset to the
wall clock, taken when tracing started: the spans of a request and of its batch are on one
monotonic clock, so they nest exactly.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, Tracer, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .tracing_context import TRACEPARENT
from .types import REQUEST_ID

_PROPAGATOR = TraceContextTextMapPropagator()


class RequestTrace:
    __slots__ = ("tracer", "span", "context", "last_ns", "offset_ns", "tensors")

    def __init__(self, tracer: Tracer, model: str, carrier: Mapping[str, str] | None, protocol: str,
                 tensors: bool, offset_ns: int) -> None:
        parent = _PROPAGATOR.extract(carrier) if carrier else None
        self.offset_ns = offset_ns
        now = time.perf_counter_ns() + offset_ns
        self.tracer, self.tensors, self.last_ns = tracer, tensors, now
        self.span = tracer.start_span("infer", context=parent, kind=SpanKind.SERVER, start_time=now, attributes={
            "model.name": model, "rpc.system": protocol, "request.id": REQUEST_ID.get() or ""})
        self.context = set_span_in_context(self.span)

    def phase(self, name: str, **attributes: Any) -> None:
        """A child span from the previous phase's end (or the request's start) to now."""
        now = time.perf_counter_ns() + self.offset_ns
        self.tracer.start_span(name, context=self.context, start_time=self.last_ns,
                               attributes=attributes or None).end(end_time=now)
        self.last_ns = now

    def mark(self) -> None:
        """The next phase starts now."""
        self.last_ns = time.perf_counter_ns() + self.offset_ns

    def decoded(self, inputs: Mapping[str, np.ndarray] | Sequence[Any]) -> None:
        """The decode phase; at level TENSORS, with each input's datatype and shape."""
        if not self.tensors:
            self.phase("decode")
            return
        described = {f"input.{i.name}": f"{i.datatype}{list(i.shape)}" for i in inputs}
        self.phase("decode", **described)

    def served(self, version: int) -> None:
        self.span.set_attribute("model.version", str(version))

    def finish(self) -> None:
        self.span.end(end_time=time.perf_counter_ns() + self.offset_ns)

    def fail(self, exc: BaseException) -> None:
        status = getattr(exc, "status", 500)
        self.span.set_attribute("error.status", status if isinstance(status, int) else 500)
        self.span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        self.span.end(end_time=time.perf_counter_ns() + self.offset_ns)


class BatchTrace:
    """The ``batch`` span (in the first traced request's trace, linking every traced request
    it merged) and its ``compute`` child; each request's ``queue`` span ends where it began."""

    __slots__ = ("batch", "compute", "offset_ns")

    def __init__(self, traced: Sequence[tuple[RequestTrace, int]], requests: int, rows: int, started_ns: int,
                 merged_ns: int) -> None:
        first = traced[0][0]
        self.offset_ns = first.offset_ns
        for trace, enqueued_ns in traced:
            trace.tracer.start_span("queue", context=trace.context, start_time=enqueued_ns + trace.offset_ns) \
                .end(end_time=started_ns + trace.offset_ns)
        links = [Link(trace.span.get_span_context()) for trace, _ in traced]
        self.batch = first.tracer.start_span("batch", context=first.context, links=links,
                                             start_time=started_ns + self.offset_ns,
                                             attributes={"batch.requests": requests, "batch.rows": rows})
        self.compute = first.tracer.start_span("compute", context=set_span_in_context(self.batch),
                                               start_time=merged_ns + self.offset_ns)
        context = self.compute.get_span_context()
        TRACEPARENT.set(f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}")

    def close(self, ran_ns: int, split_ns: int) -> None:
        self.compute.end(end_time=ran_ns + self.offset_ns)
        self.batch.end(end_time=split_ns + self.offset_ns)

    def fail(self, exc: BaseException) -> None:
        for span in (self.compute, self.batch):
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            span.end(end_time=time.perf_counter_ns() + self.offset_ns)

