"""The leader's retention duty: what the loop writes stays bounded, and its size is measured.

Every ``retention_interval_seconds`` (server-wide), and after each canary this process
decides, the elected leader applies each model's retention (``model_repo.loop_gc.gc_model``:
old versions with their lineage logged, finished job directories, decided canaries'
evidence, files of processes long gone), the repository-wide leader-request box, and the
feedback store's compaction (``model_repo.feedback_compact``). One
process only, because removing is a decision: two leaders would agree, but a follower could
remove what a newer plan it has not read yet still needs.

Every process measures its models' disk use and feedback rows on the same period, for the
``tunegate_repository_bytes`` and ``tunegate_feedback_rows`` gauges: a scrape reads the
cached numbers and never walks the repository on the event loop. All the file work runs in
a worker thread (``asyncio.to_thread``), one pass at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from model_repo.errors import RepositoryError
from model_repo.feedback import feedback_dir
from model_repo.feedback_compact import FeedbackPolicy, compact_feedback, store_rows_by_kind
from model_repo.feedback_read import FeedbackScan
from model_repo.loop_gc import disk_usage, gc_model, gc_requests
from model_repo.retention import RetentionPolicy

from ..core.registry import Registry
from ..settings import Settings
from .settings import LoopSettings

log = logging.getLogger("tunegate.retention")

def retention_policy(loop: LoopSettings) -> RetentionPolicy:
    return RetentionPolicy(keep_versions=loop.keep_versions, keep_jobs=loop.keep_jobs,
                           stale_seconds=loop.retention_stale_seconds)


class RetentionDuty:
    def __init__(self, registry: Registry, settings: Settings, *, is_leader: Callable[[], bool],
                 decisions: Callable[[], int], jobs_dir: Path | None, running_jobs: Callable[[], dict[str, str]],
                 poll_seconds: float) -> None:
        self.repo = registry.repo
        self.settings = settings
        self.is_leader = is_leader
        self.decisions = decisions  # canaries decided by this process so far: a change runs a pass
        self.jobs_dir = jobs_dir
        self.running_jobs = running_jobs  # model -> its running job's id (the job manager's records)
        self.poll_seconds = poll_seconds
        self.interval = settings.loop.retention_interval_seconds
        self.usage: dict[str, dict[str, dict[str, int]]] = {}  # model -> part -> {"bytes", "files"}
        self.rows: dict[str, dict[str, int]] = {}  # model -> kind -> feedback rows
        self.removed: dict[tuple[str, str], int] = {}  # (model, kind) -> things removed by this process
        self.passes = 0
        self._scans: dict[str, FeedbackScan] = {}  # model -> its store, counted incrementally (pass thread)
        self._task: asyncio.Task | None = None

    def begin(self) -> None:
        self._task = asyncio.create_task(self._run(), name="retention")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        last, seen, led = float("-inf"), self.decisions(), False
        while True:
            decided, leader = self.decisions(), self.is_leader()
            # A new leader applies retention at once: its predecessor may have died mid-pass.
            if time.monotonic() - last >= self.interval or decided != seen or (leader and not led):
                seen, last = decided, time.monotonic()
                try:
                    await asyncio.to_thread(self.run_pass, leader, self.running_jobs())
                except Exception:  # noqa: BLE001 - a failed pass must not end the duty
                    log.exception("retention pass failed; the next one retries")
            led = leader
            await asyncio.sleep(self.poll_seconds)

    def _models(self) -> list[str]:
        try:
            return self.repo.list_models()
        except OSError:
            return []

    def run_pass(self, leader: bool, running: dict[str, str]) -> None:
        """Apply retention (the leader only), then measure every model (blocking)."""
        if leader:
            self._count("*", "requests", gc_requests(self.repo.root, self.settings.loop.retention_stale_seconds))
        for model in self._models():
            loop = self.settings.loop_for(model)
            try:
                if leader:
                    removed = gc_model(self.repo, model, retention_policy(loop), jobs_dir=self.jobs_dir,
                                       running_job=running.get(model))
                    for kind, items in removed.items():
                        self._count(model, kind, items)
                    self._compact(model, loop)
                self.usage[model] = disk_usage(self.repo, model, self.jobs_dir)
                directory = feedback_dir(self.repo.root, model)
                if model not in self._scans:
                    self._scans[model] = FeedbackScan(directory)
                self.rows[model] = store_rows_by_kind(directory, self._scans[model])
            except (RepositoryError, OSError) as exc:
                log.warning("model %s: retention skipped this pass: %s", model, exc)
        for gone in set(self.usage) - set(self._models()):
            self.usage.pop(gone, None)
            self.rows.pop(gone, None)
            self._scans.pop(gone, None)
        self.passes += 1

    def _count(self, model: str, kind: str, items: list) -> None:
        if items:
            self.removed[(model, kind)] = self.removed.get((model, kind), 0) + len(items)
            log.info("retention: model %s: removed %d %s", model, len(items), kind)

    def _compact(self, model: str, loop: LoopSettings) -> None:
        directory = feedback_dir(self.repo.root, model)
        if not directory.is_dir():
            return
        try:
            compact_feedback(directory, FeedbackPolicy.from_settings(loop))
        except Exception:  # noqa: BLE001 - compaction is crash-safe by design; versions and files still get their pass
            log.exception("model %s: feedback compaction failed; the next pass retries", model)
