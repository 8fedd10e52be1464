"""The OpenTelemetry SDK's provider and OTLP exporter for :class:`~.tracing.Tracing`."""

from __future__ import annotations

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from .errors import StartupError
from .tracing_settings import TracingSettings


def build_provider(settings: TracingSettings) -> TracerProvider:
    """A provider of its own (never OpenTelemetry's global one: two gateways in one process
    must not share it), batching spans to the OTLP exporter off the event loop."""
    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
    provider.add_span_processor(BatchSpanProcessor(
        _exporter(settings), schedule_delay_millis=settings.export_delay_seconds * 1000))
    return provider


def _exporter(settings: TracingSettings) -> SpanExporter:
    if settings.protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc
        except ImportError:
            raise StartupError("tracing.protocol 'grpc' needs the opentelemetry-exporter-otlp-proto-grpc "
                               "package; or use 'http/protobuf'") from None
        return Grpc(endpoint=settings.endpoint, headers=dict(settings.headers) or None, insecure=True)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    return OTLPSpanExporter(endpoint=settings.endpoint, headers=dict(settings.headers) or None)
