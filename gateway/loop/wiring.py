"""The online-learning loop, wired onto the core: feedback and capture, fine-tune jobs,
canaries (the registry's :class:`~gateway.core.routing.Router`), their metrics, and the
election of the one process among workers and replicas that takes the loop's decisions.

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
from .drift import DriftMonitor
from .drift_metrics import DriftCollector
from .evidence import LOOP_DIR
from .feedback import FeedbackService
from .jobs.launcher import Launcher
from .jobs.local import LocalLauncher
from .jobs.manager import JobManager
from .leader_requests import RequestBox
from .leadership import Campaign, FileLockCampaign, LeaseCampaign, Leadership, process_identity
from .metrics import LoopCollector, RetentionCollector
from .retention import RetentionDuty


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


def make_campaign(settings: Settings, identity: str) -> Campaign:
    """The election backend ``settings.leader.backend`` names (connects on first use)."""
    leader = settings.leader
    if leader.backend == "kubernetes":
        from model_repo.kubernetes_job import current_namespace

        return LeaseCampaign(leader.lease_name, leader.namespace or current_namespace(), identity,
                             leader.lease_seconds)
    lock_file = leader.lock_file or Path(settings.repo).absolute() / LOOP_DIR / "leader.lock"
    return FileLockCampaign(lock_file, identity)


class Loop:
    def __init__(self, settings: Settings, registry: Registry, dataplane: DataPlane,
                 metrics_registry: CollectorRegistry) -> None:
        leader = settings.leader
        self.instance = process_identity(leader.identity)
        # A file lock is held until its process dies: no renewal can fail, so no deadline.
        deadline = leader.lease_seconds * 2 / 3 if leader.backend == "kubernetes" else float("inf")
        self.leadership = Leadership(make_campaign(settings, self.instance), retry_seconds=leader.retry_seconds,
                                     renew_deadline_seconds=deadline)
        is_leader = lambda: self.leadership.is_leader  # noqa: E731 - read at each call
        self.canary = CanaryController(registry, settings.loop_for, instance=self.instance, is_leader=is_leader,
                                       poll_seconds=leader.poll_seconds)
        self.drift = DriftMonitor(registry, settings.loop_for, instance=self.instance, poll_seconds=leader.poll_seconds)
        self.jobs = JobManager(registry, make_launcher(settings), settings.loop_for, self.canary.current,
                               is_leader=is_leader, requests=RequestBox(Path(settings.repo).absolute()),
                               poll_seconds=leader.poll_seconds, request_timeout=leader.request_timeout_seconds,
                               drift=self.drift.sustained)
        self.feedback = FeedbackService(registry, settings, self.canary, self.jobs.feedback_arrived,
                                        instance=self.instance)
        self.canary.replay = self.feedback.replay_inputs
        self.jobs.rows_after = self.feedback.rows_after
        self.leadership.on_change(self.jobs.elected, self.jobs.deposed)
        registry.use_router(self.canary)
        dataplane.observers.append(self._observe)
        dataplane.parameter_sources += [self.canary.parameters, self.jobs.parameters, self.drift.parameters]
        metrics_registry.register(LoopCollector(self.feedback, self.jobs, self.canary, registry,
                                                self.leadership))
        metrics_registry.register(DriftCollector(self.drift))
        # Bounds what the loop writes (leader only) and measures it (every process, cached).
        self.retention = RetentionDuty(registry, settings, is_leader=is_leader,
                                       decisions=lambda: sum(self.canary.decisions.values()),
                                       jobs_dir=settings.loop.jobs_dir or Path(settings.repo).absolute() / ".jobs",
                                       running_jobs=lambda: dict(self.jobs.running),
                                       poll_seconds=leader.poll_seconds)
        metrics_registry.register(RetentionCollector(self.retention))

    def start(self) -> None:
        """Campaign for the loop's leadership and run the duties every process has."""
        self.leadership.start()
        self.jobs.begin()
        self.drift.begin()
        self.retention.begin()

    def _observe(self, model: str, version: int, ok: bool, elapsed_ns: int, request: InferRequest,
                 answer) -> None:
        self.canary.observe(model, version, ok, elapsed_ns)
        self.drift.observe(model, answer)
        ids = [i for i in dict.fromkeys((request.id, REQUEST_ID.get())) if i]
        self.feedback.observe_infer(model, version, ok, elapsed_ns, request, answer, ids)

    async def close(self) -> None:
        await self.leadership.close()
        await self.retention.close()
        await self.jobs.close()
        await self.drift.close()
        await self.canary.close()
        await self.feedback.close()
