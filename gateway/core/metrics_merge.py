"""One ``/metrics`` for several serving workers on one host: their expositions summed.

Each worker keeps its own counters (its own requests, batches, feedback); a scrape that
reaches any worker answers for all of them, as prometheus_client's multiprocess mode would,
but for every family the gateway exposes, including the collectors that read the StatsBook
at scrape time (which multiprocess mode cannot share). Samples with the same name and labels
add up, except where adding is wrong: a ``_created`` timestamp takes the earliest, and the
families in :data:`SAME_EVERYWHERE` (a fact about the host or the repository that every
worker states alike, e.g. which versions are loaded) take the largest.
Across replicas nothing is merged: each pod is its own target and Prometheus sums them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

# Gauges every worker reports with the same meaning: the value is not a share of the work.
SAME_EVERYWHERE = frozenset({"tunegate_model_info", "tunegate_canary", "nv_gpu_utilization",
                             "nv_gpu_memory_used_bytes", "nv_gpu_memory_total_bytes"})


def merge_expositions(own: CollectorRegistry, others: Iterable[str]) -> bytes:
    """``own``'s metrics with the other workers' text expositions folded in."""
    merged: dict[str, Metric] = {}
    values: dict[tuple, float] = {}
    order: list[tuple] = []
    families = [own.collect()] + [text_string_to_metric_families(text) for text in others]
    for source in families:
        for family in source:
            target = merged.setdefault(family.name, Metric(family.name, family.documentation, family.type))
            for sample in family.samples:
                key = (family.name, sample.name, tuple(sorted(sample.labels.items())))
                if key not in values:
                    order.append(key)
                    values[key] = sample.value
                else:
                    values[key] = _combine(family.name, sample.name, values[key], sample.value)
            target.samples = []  # rebuilt below, once every worker is in
    for family_name, sample_name, labels in order:
        merged[family_name].add_sample(sample_name, dict(labels), values[(family_name, sample_name, labels)])
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(list(merged.values())))
    return generate_latest(registry)


def _combine(family: str, sample: str, a: float, b: float) -> float:
    if sample.endswith("_created"):
        return min(a, b)
    if family in SAME_EVERYWHERE:
        return max(a, b)
    return a + b


class _Fixed(Collector):
    def __init__(self, metrics: list[Metric]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return iter(self._metrics)
