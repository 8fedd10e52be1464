"""Prometheus metrics with Triton's names, read from the StatsBook at scrape time.

prometheus_client appends ``_total`` to every counter family, which would rename Triton's
``nv_inference_count`` and break existing dashboards; the cumulative series are therefore
exposed as untyped families whose names match Triton exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from .gpu_metrics import GpuCollector
from .stats import LATENCY_BUCKETS_US, StatsBook, VersionStats, cumulative

# (metric name, help, how to read it from VersionStats); durations are microseconds.
_CUMULATIVE = (
    ("nv_inference_request_success", "Number of successful inference requests", lambda s: s.success.count),
    ("nv_inference_count", "Number of inferences performed (batch elements)", lambda s: s.inference_count),
    ("nv_inference_exec_count", "Number of model executions (batches)", lambda s: s.execution_count),
    ("nv_inference_request_duration_us", "Cumulative end-to-end request duration",
     lambda s: (s.success.ns + s.fail.ns) // 1000),
    ("nv_inference_queue_duration_us", "Cumulative time requests spent queued", lambda s: s.queue.ns // 1000),
    ("nv_inference_compute_input_duration_us", "Cumulative input preparation (batch merge) time",
     lambda s: s.compute_input.ns // 1000),
    ("nv_inference_compute_infer_duration_us", "Cumulative model execution time",
     lambda s: s.compute_infer.ns // 1000),
    ("nv_inference_compute_output_duration_us", "Cumulative output split time",
     lambda s: s.compute_output.ns // 1000),
    ("nv_cache_num_hits_per_model", "Number of response cache hits per model", lambda s: s.cache_hit.count),
    ("nv_cache_num_misses_per_model", "Number of response cache misses per model", lambda s: s.cache_miss.count),
    ("nv_cache_hit_duration_per_model", "Cumulative time retrieving cached responses on cache hits",
     lambda s: s.cache_hit.ns // 1000),
    ("nv_cache_miss_duration_per_model", "Cumulative time looking up and inserting responses on cache misses",
     lambda s: s.cache_miss.ns // 1000),
)

# (histogram name, help, its bucket counts, its sum in ns), successful requests only.
_HISTOGRAMS = (
    ("nv_inference_request_histogram_us", "Distribution of successful requests' end-to-end duration",
     lambda s: s.request_buckets, lambda s: s.success.ns),
    ("nv_inference_queue_histogram_us", "Distribution of successful requests' time in the queue",
     lambda s: s.queue_buckets, lambda s: s.queue.ns),
    ("nv_inference_compute_histogram_us",
     "Distribution of successful requests' batch compute time (input + infer + output)",
     lambda s: s.compute_buckets, lambda s: s.compute_input.ns + s.compute_infer.ns + s.compute_output.ns),
)
_LE = [floatToGoString(b) for b in LATENCY_BUCKETS_US] + ["+Inf"]


def _histograms(items: list[tuple[tuple[str, str], VersionStats]]) -> Iterator[Metric]:
    for name, doc, buckets, total_ns in _HISTOGRAMS:
        metric = Metric(name, doc, "histogram")
        for (model, version), stats in items:
            labels = {"model": model, "version": version}
            counts = cumulative(buckets(stats))
            for le, count in zip(_LE, counts):
                metric.add_sample(name + "_bucket", {**labels, "le": le}, float(count))
            metric.add_sample(name + "_count", labels, float(counts[-1]))
            metric.add_sample(name + "_sum", labels, total_ns(stats) / 1000)
        yield metric


class GatewayCollector(Collector):
    def __init__(self, book: StatsBook, serving: Callable[[], Iterable[tuple[str, int, str, str]]]) -> None:
        """``serving`` lists (model, version, platform, execution provider) of loaded versions."""
        self._book = book
        self._serving = serving

    def collect(self) -> Iterator[Metric]:
        items = self._book.items()
        for name, doc, read in _CUMULATIVE:
            metric = Metric(name, doc, "unknown")
            for (model, version), stats in items:
                metric.add_sample(name, {"model": model, "version": version}, float(read(stats)))
            yield metric
        failure = Metric("nv_inference_request_failure", "Number of failed inference requests", "unknown")
        pending = Metric("nv_inference_pending_request_count", "Requests waiting in the queue", "gauge")
        for (model, version), stats in items:
            labels = {"model": model, "version": version}
            for reason, count in stats.failures_by_reason.items():
                failure.add_sample("nv_inference_request_failure", {**labels, "reason": reason}, float(count))
            pending.add_sample("nv_inference_pending_request_count", labels, float(stats.pending))
        yield failure
        yield pending
        yield from _histograms(items)
        info = Metric("tunegate_model_info", "Loaded versions and the execution provider they run on", "gauge")
        for model, version, platform, provider in self._serving():
            info.add_sample("tunegate_model_info", {"model": model, "version": str(version), "platform": platform,
                                                    "execution_provider": provider}, 1.0)
        yield info


def build_registry(book: StatsBook, serving: Callable[[], Iterable[tuple[str, int, str, str]]],
                   registry: CollectorRegistry | None = None) -> CollectorRegistry:
    registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(book, serving))
    registry.register(GpuCollector())
    return registry
