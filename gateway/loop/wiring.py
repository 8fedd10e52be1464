"""The online-learning loop, wired onto the core: feedback and capture, fine-tune jobs,
canaries (the registry's :class:`~gateway.core.routing.Router`), their metrics.

It hangs off the DataPlane as an observer of every answered infer and as a source of
model-metadata parameters; front ends reach it through :class:`Loop`'s parts (the HTTP
loop routes). ``Loop.close`` runs before the registry closes, so jobs are cancelled and
captures flushed while the models are still there. Nothing here knows a protocol.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from ..core.dataplane import DataPlane
from ..core.registry import Registry
from ..core.types import REQUEST_ID, InferRequest
from ..settings import Settings
from .canary import CanaryController
from .feedback import FeedbackService
from .jobs.launcher import Launcher
from .jobs.local import LocalLauncher
from .jobs.manager import JobManager
from .metrics import LoopCollector


def make_launcher(settings: Settings) -> Launcher:
    """The launcher ``settings.loop.launcher`` names; it connects to a cluster on first use."""
    loop = settings.loop
    if loop.launcher == "kubernetes":
        # Imported here: only a cluster deployment needs it (and its `kubernetes` client).
        from .jobs.kubernetes import KubernetesLauncher

        return KubernetesLauncher.from_settings(template_file=loop.job_template, repo=settings.repo,
                                                namespace=loop.namespace)
    jobs_dir = loop.jobs_dir or Path(settings.repo).absolute() / ".jobs"
    program = tuple(loop.program) if loop.program else None
    if loop.launcher == "spark":
        from .jobs.spark import SparkLauncher

        return SparkLauncher(jobs_dir, master=loop.spark_master, conf=loop.spark_conf, program=program)
    return LocalLauncher(jobs_dir, program=program)


class Loop:
    def __init__(self, settings: Settings, registry: Registry, dataplane: DataPlane,
                 metrics_registry: CollectorRegistry) -> None:
        self.canary = CanaryController(registry, settings.loop_for)
        self.jobs = JobManager(registry, make_launcher(settings), settings.loop_for, self.canary.current)
        self.feedback = FeedbackService(registry, settings, self.canary, self.jobs.feedback_arrived)
        registry.use_router(self.canary)
        dataplane.observers.append(self._observe)
        dataplane.parameter_sources += [self.canary.parameters, self.jobs.parameters]
        metrics_registry.register(LoopCollector(self.feedback, self.jobs, self.canary, registry))

    def _observe(self, model: str, version: int, ok: bool, elapsed_ns: int, request: InferRequest,
                 answer) -> None:
        self.canary.observe(model, version, ok, elapsed_ns)
        ids = [i for i in dict.fromkeys((request.id, REQUEST_ID.get())) if i]
        self.feedback.observe_infer(model, version, ok, elapsed_ns, request, answer, ids)

    async def close(self) -> None:
        await self.jobs.close()
        await self.canary.close()
        await self.feedback.close()
