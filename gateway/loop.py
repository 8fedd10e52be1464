"""The online-learning loop, wired into the application: feedback and capture, fine-tune
jobs, canaries; their routes (``rest_loop``), metrics and clean-up.

``setup_loop(app)`` is called by ``create_app``; everything it builds hangs off typed
``AppKey``s and is closed by its ``cleanup_ctx`` step (before the registry's, so jobs are
cancelled and captures flushed while the models are still there).
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from .canary import CanaryController
from .codec import InferRequest
from .feedback import FeedbackService
from .jobs.launcher import Launcher
from .jobs.local import LocalLauncher
from .jobs.manager import JobManager
from .keys import DATAPLANE, REGISTRY, SETTINGS
from .registry import Registry
from .settings import Settings

# The X-Request-ID of the request being handled (set by app.request_middleware), so a
# captured infer can be found by the id the client saw in the response header.
REQUEST_ID = contextvars.ContextVar[str | None]("tunegate_request_id", default=None)

FEEDBACK = web.AppKey("feedback", FeedbackService)
CANARY = web.AppKey("canary", CanaryController)
JOBS = web.AppKey("jobs", JobManager)


def make_launcher(settings: Settings) -> Launcher:
    """The launcher ``settings.loop.launcher`` names; it connects to a cluster on first use."""
    loop = settings.loop
    if loop.launcher == "kubernetes":
        # Imported here: only a cluster deployment needs it (and its `kubernetes` client).
        from .jobs.kubernetes import KubernetesLauncher

        return KubernetesLauncher.from_settings(template_file=loop.job_template, repo=settings.repo,
                                                namespace=loop.namespace)
    jobs_dir = loop.jobs_dir or Path(settings.repo).absolute() / ".jobs"
    return LocalLauncher(jobs_dir, program=tuple(loop.program) if loop.program else None)


def setup_loop(app: web.Application, metrics_registry: CollectorRegistry) -> None:
    from .rest_loop import add_loop_routes

    settings, registry, dataplane = app[SETTINGS], app[REGISTRY], app[DATAPLANE]
    canary = CanaryController(registry, settings.loop_for)
    jobs = JobManager(registry, make_launcher(settings), settings.loop_for)
    feedback = FeedbackService(registry, settings, canary, jobs.feedback_arrived)
    registry.on_canary = canary.started
    app[CANARY], app[JOBS], app[FEEDBACK] = canary, jobs, feedback

    def observe(model: str, version: int, ok: bool, elapsed_ns: int, request: InferRequest, answer) -> None:
        canary.observe(model, version, ok, elapsed_ns)
        ids = [i for i in dict.fromkeys((request.id, REQUEST_ID.get())) if i]
        feedback.observe_infer(model, version, ok, elapsed_ns, request, answer, ids)

    dataplane.observers.append(observe)
    dataplane.parameter_sources += [canary.parameters, jobs.parameters]
    metrics_registry.register(LoopCollector(feedback, jobs, canary, registry))
    add_loop_routes(app)
    app.cleanup_ctx.append(_loop_ctx)


async def _loop_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[JOBS].close()
    await app[CANARY].close()
    await app[FEEDBACK].close()


class LoopCollector(Collector):
    """Feedback counts and bytes, fine-tune jobs, canary state and decisions."""

    def __init__(self, feedback: FeedbackService, jobs: JobManager, canary: CanaryController,
                 registry: Registry) -> None:
        self._feedback, self._jobs, self._canary, self._registry = feedback, jobs, canary, registry

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
            state = record.canary
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
