"""Per-version statistics in Triton's shape; the one source for ``/stats`` and ``/metrics``.

All updates happen on the event loop (the batcher resolves futures there), so no locks.

Latency distributions are histograms, not Triton's ``nv_inference_*_summary_us`` summaries:
a summary's quantiles cannot be added up, while ``/metrics`` sums several workers'
expositions (core/metrics_merge.py), Prometheus sums replicas, and a removed version's
counts fold into its model's ``retired`` series; bucket counts add up in all three places,
and ``histogram_quantile`` gives any quantile afterwards. Each successful request costs one
``bisect`` and one list increment per histogram; the sums and counts are the cumulative
durations already kept, so nothing else is added to the hot path.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns

    def to_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class BatchStat:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass
class Timing:
    """Where one request's time went inside its batch, in nanoseconds."""

    queue_ns: int
    input_ns: int
    infer_ns: int
    output_ns: int
    batch_size: int


FAILURE_REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")  # Triton's label values

# Upper bounds (``le``) of the latency histograms' buckets, in microseconds as Triton's
# durations are: 100 µs (a small model on a warm CPU) to 10 s (a queue timeout's scale).
LATENCY_BUCKETS_US = (100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000,
                      250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000)
_BOUNDS_NS = tuple(b * 1000 for b in LATENCY_BUCKETS_US)


def _buckets() -> list[int]:
    """One count per bucket and one over the last bound (+Inf); not cumulative."""
    return [0] * (len(_BOUNDS_NS) + 1)


def cumulative(counts: list[int]) -> list[int]:
    """Prometheus' ``_bucket`` values: the counts at or under each bound, then +Inf."""
    out, running = [], 0
    for count in counts:
        running += count
        out.append(running)
    return out


@dataclass
class VersionStats:
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    inference_count: int = 0  # rows (batch elements) answered
    execution_count: int = 0  # session runs
    last_inference_ms: int = 0
    failures_by_reason: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAILURE_REASONS, 0))
    batch_stats: dict[int, BatchStat] = field(default_factory=dict)
    pending: int = 0  # requests waiting in the queue now (a gauge)
    cache_hit: Duration = field(default_factory=Duration)  # response cache: lookups that answered
    cache_miss: Duration = field(default_factory=Duration)  # lookups that did not, plus the insert
    # Latency histograms of successful requests (bucket counts, see LATENCY_BUCKETS_US): the
    # whole request, its wait in the queue, and its batch's compute (input + infer + output).
    request_buckets: list[int] = field(default_factory=_buckets)
    queue_buckets: list[int] = field(default_factory=_buckets)
    compute_buckets: list[int] = field(default_factory=_buckets)
    # Responses the model failed to make, and requests cancelled: response_stats' fail/cancel.
    response_fail: Duration = field(default_factory=Duration)
    response_cancel: Duration = field(default_factory=Duration)

    def record_success(self, rows: int, total_ns: int, timing: Timing) -> None:
        self.success.add(total_ns)
        self.queue.add(timing.queue_ns)
        self.compute_input.add(timing.input_ns)
        self.compute_infer.add(timing.infer_ns)
        self.compute_output.add(timing.output_ns)
        self.request_buckets[bisect_left(_BOUNDS_NS, total_ns)] += 1
        self.queue_buckets[bisect_left(_BOUNDS_NS, timing.queue_ns)] += 1
        self.compute_buckets[bisect_left(_BOUNDS_NS, timing.input_ns + timing.infer_ns + timing.output_ns)] += 1
        self.inference_count += rows
        self.last_inference_ms = int(time.time() * 1000)

    def record_cached(self, total_ns: int) -> None:
        """A request the response cache answered: a success, with no queue or compute (Triton's
        inference and execution counts leave cached requests out)."""
        self.success.add(total_ns)
        self.last_inference_ms = int(time.time() * 1000)

    def record_failure(self, total_ns: int, reason: str) -> None:
        self.fail.add(total_ns)
        self.failures_by_reason[reason if reason in self.failures_by_reason else "OTHER"] += 1
        if reason == "BACKEND":
            self.response_fail.add(total_ns)
        elif reason == "CANCELED":
            self.response_cancel.add(0)  # nothing held to clean up: the batcher drops it
        self.last_inference_ms = int(time.time() * 1000)

    def record_execution(self, batch_size: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        self.execution_count += 1
        stat = self.batch_stats.setdefault(batch_size, BatchStat())
        stat.compute_input.add(input_ns)
        stat.compute_infer.add(infer_ns)
        stat.compute_output.add(output_ns)

    def absorb(self, other: VersionStats) -> None:
        """Add another version's totals to these (a removed version's, into its model's)."""
        for name in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output",
                     "response_fail", "response_cancel"):
            getattr(self, name).add(getattr(other, name).ns, getattr(other, name).count)
        for name in ("request_buckets", "queue_buckets", "compute_buckets"):
            ours, theirs = getattr(self, name), getattr(other, name)
            for i, count in enumerate(theirs):
                ours[i] += count
        self.inference_count += other.inference_count
        self.execution_count += other.execution_count
        self.cache_hit.add(other.cache_hit.ns, other.cache_hit.count)
        self.cache_miss.add(other.cache_miss.ns, other.cache_miss.count)
        self.last_inference_ms = max(self.last_inference_ms, other.last_inference_ms)
        for reason, count in other.failures_by_reason.items():
            self.failures_by_reason[reason] += count
        for size, theirs in other.batch_stats.items():
            ours = self.batch_stats.setdefault(size, BatchStat())
            for name in ("compute_input", "compute_infer", "compute_output"):
                getattr(ours, name).add(getattr(theirs, name).ns, getattr(theirs, name).count)

    def to_triton(self, model: str, version: int) -> dict[str, Any]:
        """One entry of Triton's ``model_stats`` list."""
        return {
            "name": model,
            "version": str(version),
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.to_dict(),
                "fail": self.fail.to_dict(),
                "queue": self.queue.to_dict(),
                "compute_input": self.compute_input.to_dict(),
                "compute_infer": self.compute_infer.to_dict(),
                "compute_output": self.compute_output.to_dict(),
                "cache_hit": self.cache_hit.to_dict(),
                "cache_miss": self.cache_miss.to_dict(),
            },
            "response_stats": self.response_stats(),
            "batch_stats": [
                {"batch_size": size, "compute_input": s.compute_input.to_dict(),
                 "compute_infer": s.compute_infer.to_dict(), "compute_output": s.compute_output.to_dict()}
                for size, s in sorted(self.batch_stats.items())
            ],
        }

    def response_stats(self) -> dict[str, Any]:
        """Triton's ``response_stats``: keyed by the response's index, and a model that is not
        decoupled answers each request with one response, "0". Its infer and output times are
        the requests' own (``inference_stats``); a success lasts their sum, as Triton counts it."""
        if not (self.success.count or self.response_fail.count or self.response_cancel.count):
            return {}
        infer, output = self.compute_infer, self.compute_output
        return {"0": {
            "compute_infer": infer.to_dict(),
            "compute_output": output.to_dict(),
            "success": {"count": self.success.count, "ns": infer.ns + output.ns},
            "fail": self.response_fail.to_dict(),
            "empty_response": {"count": 0, "ns": 0},
            "cancel": self.response_cancel.to_dict(),
        }}


class StatsBook:
    """Statistics by (model, version). A version's survive reloads, so its Prometheus
    counters never go backwards; once it is removed from service they are added to its
    model's ``retired`` totals and its own series go, so a model fine-tuned every hour does
    not grow ``/metrics`` by a dozen series per version while the sum over a model's
    versions still never goes backwards."""

    def __init__(self) -> None:
        self._stats: dict[tuple[str, int], VersionStats] = {}
        self._retired: dict[str, VersionStats] = {}

    def get(self, model: str, version: int) -> VersionStats:
        key = (model, version)
        stats = self._stats.get(key)
        if stats is None:
            stats = self._stats[key] = VersionStats()
        return stats

    def retire(self, model: str, version: int) -> None:
        stats = self._stats.pop((model, version), None)
        if stats is not None:
            self._retired.setdefault(model, VersionStats()).absorb(stats)

    def items(self) -> list[tuple[tuple[str, str], VersionStats]]:
        """((model, version label), stats), versions first, then each model's ``retired``."""
        rows = [((model, str(version)), stats) for (model, version), stats in sorted(self._stats.items())]
        return rows + [((model, RETIRED), stats) for model, stats in sorted(self._retired.items())]


RETIRED = "retired"  # the version label of a model's removed versions' totals
