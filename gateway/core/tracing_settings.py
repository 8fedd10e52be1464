"""The ``tracing`` settings: where spans go and how requests are sampled at start.

Triton's trace extension (``/v2/trace/setting``, gRPC ``TraceSetting``) changes the sampling
fields at run time; this is where they start.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

TraceLevel = Literal["OFF", "TIMESTAMPS", "TENSORS"]


class TracingSettings(BaseModel):
    """OpenTelemetry traces of inference requests, exported over OTLP."""

    model_config = ConfigDict(extra="forbid")

    endpoint: str | None = None
    """The OTLP collector: ``http://host:4318/v1/traces`` for ``http/protobuf``,
    ``host:4317`` for ``grpc``. None: no exporter, and tracing is off whatever the trace
    settings say (a request then costs one attribute check)."""

    protocol: Literal["http/protobuf", "grpc"] = "http/protobuf"
    """OTLP's transport. ``grpc`` needs the ``opentelemetry-exporter-otlp-proto-grpc`` package."""

    headers: dict[str, str] = {}
    """Extra headers on every export (a collector's API key, for instance)."""

    service_name: str = "tunegate"
    """The ``service.name`` resource attribute of every span."""

    level: list[TraceLevel] = ["TIMESTAMPS"]
    """Triton's ``trace_level`` at start: ``OFF``, or ``TIMESTAMPS`` (the request's spans);
    ``TENSORS`` adds the inputs' names, datatypes and shapes as attributes."""

    rate: int = Field(1, ge=1)
    """Triton's ``trace_rate``: one request in ``rate`` is traced."""

    count: int = Field(-1, ge=-1)
    """Triton's ``trace_count``: traces still to take before tracing stops; -1: no limit."""

    export_delay_seconds: float = Field(1.0, gt=0)
    """How long finished spans wait to be exported in one batch."""
