"""Per-version statistics in Triton's shape; the one source for ``/stats`` and ``/metrics``.

All updates happen on the event loop (the batcher resolves futures there), so no locks.
"""

from __future__ import annotations

import time
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

    def record_success(self, rows: int, total_ns: int, timing: Timing) -> None:
        self.success.add(total_ns)
        self.queue.add(timing.queue_ns)
        self.compute_input.add(timing.input_ns)
        self.compute_infer.add(timing.infer_ns)
        self.compute_output.add(timing.output_ns)
        self.inference_count += rows
        self.last_inference_ms = int(time.time() * 1000)

    def record_failure(self, total_ns: int, reason: str) -> None:
        self.fail.add(total_ns)
        self.failures_by_reason[reason if reason in self.failures_by_reason else "OTHER"] += 1
        self.last_inference_ms = int(time.time() * 1000)

    def record_execution(self, batch_size: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        self.execution_count += 1
        stat = self.batch_stats.setdefault(batch_size, BatchStat())
        stat.compute_input.add(input_ns)
        stat.compute_infer.add(infer_ns)
        stat.compute_output.add(output_ns)

    def absorb(self, other: VersionStats) -> None:
        """Add another version's totals to these (a removed version's, into its model's)."""
        for name in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
            getattr(self, name).add(getattr(other, name).ns, getattr(other, name).count)
        self.inference_count += other.inference_count
        self.execution_count += other.execution_count
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
                "cache_hit": {"count": 0, "ns": 0},
                "cache_miss": {"count": 0, "ns": 0},
            },
            "batch_stats": [
                {"batch_size": size, "compute_input": s.compute_input.to_dict(),
                 "compute_infer": s.compute_infer.to_dict(), "compute_output": s.compute_output.to_dict()}
                for size, s in sorted(self.batch_stats.items())
            ],
        }


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
