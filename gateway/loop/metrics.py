"""The loop's Prometheus metrics: feedback, the store's quarantine, fine-tune jobs,
canaries. Read at scrape time from the loop's own objects."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from ..core.registry import Registry
from .canary import CanaryController
from .leadership import Leadership
from .feedback import FeedbackService
from .jobs.manager import JobManager
from .retention import RetentionDuty


class LoopCollector(Collector):
    """Feedback counts and bytes, fine-tune jobs, canary state and decisions."""

    def __init__(self, feedback: FeedbackService, jobs: JobManager, canary: CanaryController,
                 registry: Registry, leadership: Leadership) -> None:
        self._feedback, self._jobs, self._canary, self._registry = feedback, jobs, canary, registry
        self._leadership = leadership

    def collect(self) -> Iterator[Metric]:
        # Untyped, like the nv_* families: prometheus_client would rename counters.
        families = {
            "tunegate_feedback_requests": ("Feedback requests stored", lambda c: c.requests),
            "tunegate_feedback_samples": ("Feedback samples (rows) stored", lambda c: c.samples),
            "tunegate_feedback_bytes": ("Bytes of feedback request bodies stored", lambda c: c.bytes),
            "tunegate_feedback_labelled_answers": ("Feedback samples that labelled a captured answer",
                                                   lambda c: c.labelled_answers),
        }
        for name, (doc, read) in families.items():
            metric = Metric(name, doc, "unknown")
            for model, counts in sorted(self._feedback.counts.items()):
                metric.add_sample(name, {"model": model}, float(read(counts)))
            yield metric
        # The store is scanned in the background, incrementally; a scrape reads the latest scan.
        quarantined = Metric("tunegate_feedback_quarantined_total",
                             "Records in the model's feedback store that the reader quarantines (skips)", "unknown")
        for model, count in sorted(self._feedback.quarantined().items()):
            quarantined.add_sample("tunegate_feedback_quarantined_total", {"model": model}, float(count))
        yield quarantined
        jobs = Metric("tunegate_finetune_jobs", "Fine-tune jobs finished, by outcome", "unknown")
        for (model, state), count in sorted(self._jobs.finished.items()):
            jobs.add_sample("tunegate_finetune_jobs", {"model": model, "state": state}, float(count))
        yield jobs
        running = Metric("tunegate_finetune_running", "1 while a model has a fine-tune job running", "gauge")
        for model in sorted(self._jobs.running):
            running.add_sample("tunegate_finetune_running", {"model": model}, 1.0)
        yield running
        decisions = Metric("tunegate_canary_decisions", "Canaries promoted or rolled back", "unknown")
        for (model, outcome), count in sorted(self._canary.decisions.items()):
            decisions.add_sample("tunegate_canary_decisions", {"model": model, "outcome": outcome}, float(count))
        yield decisions
        live = Metric("tunegate_canary", "Live canaries: share of unpinned traffic, by version", "gauge")
        window = Metric("tunegate_canary_window_requests", "Requests answered in the canary window",
                        "gauge")
        for record in self._registry.records():
            state = self._canary.current(record.name)
            if state is None or not state.live:
                continue
            live.add_sample("tunegate_canary", {"model": record.name, "version": str(state.version),
                                                "stable_version": str(state.stable)}, state.fraction)
            for side, data in (("canary", state.canary_side), ("stable", state.stable_side)):
                window.add_sample("tunegate_canary_window_requests",
                                  {"model": record.name, "side": side, "outcome": "success"},
                                  float(data.requests - data.errors))
                window.add_sample("tunegate_canary_window_requests",
                                  {"model": record.name, "side": side, "outcome": "error"}, float(data.errors))
        yield live
        yield window
        leader = Metric("tunegate_loop_leader", "1 in the process that runs the loop's decisions, else 0", "gauge")
        leader.add_sample("tunegate_loop_leader", {}, float(self._leadership.is_leader))
        yield leader


class RetentionCollector(Collector):
    """Disk use per model and part, and feedback rows by kind, as the retention duty last
    measured them (off the event loop; a scrape only reads the cache)."""

    def __init__(self, retention: RetentionDuty) -> None:
        self._retention = retention

    def collect(self) -> Iterator[Metric]:
        size = Metric("tunegate_repository_bytes", "Bytes a model takes on the repository, by part "
                      "(versions, feedback, capture, jobs, training, evidence, other)", "gauge")
        files = Metric("tunegate_repository_files", "Files a model has on the repository, by part", "gauge")
        for model, parts in sorted(self._retention.usage.items()):
            for part, counted in parts.items():
                size.add_sample("tunegate_repository_bytes", {"model": model, "part": part}, float(counted["bytes"]))
                files.add_sample("tunegate_repository_files", {"model": model, "part": part}, float(counted["files"]))
        yield size
        yield files
        rows = Metric("tunegate_feedback_rows", "Rows in the model's feedback store: recent (kept whole) and "
                      "replay (the reservoir older rows are thinned to)", "gauge")
        for model, kinds in sorted(self._retention.rows.items()):
            for kind, count in sorted(kinds.items()):
                rows.add_sample("tunegate_feedback_rows", {"model": model, "kind": kind}, float(count))
        yield rows
        removed = Metric("tunegate_retention_removed", "Things the retention duty removed, by model and kind "
                         "(versions, jobs, training, evidence, drift, capture, requests)", "unknown")
        for (model, kind), count in sorted(self._retention.removed.items()):
            removed.add_sample("tunegate_retention_removed", {"model": model, "kind": kind}, float(count))
        yield removed
