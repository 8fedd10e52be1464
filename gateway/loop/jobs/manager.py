"""When fine-tune jobs start, and what happens when they end.

Triggers per model (``LoopSettings.trigger``): ``manual`` (the control route only),
``samples`` (also once ``trigger_samples`` new feedback samples arrived since the last
job started), ``schedule`` (also every ``trigger_interval_seconds``, if new feedback
arrived). One job per model at a time, and none while the model has a canary on trial:
the next job must start from a decided version.

A job fine-tunes the model's *stable* version (pinned with ``--version``, so a rejected
canary, though still newest on disk, is never the base). When a job publishes, the model
is reconciled at once, which puts the new version in service as a canary.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import uuid
from collections.abc import Callable
from typing import Any

from ...core.errors import Conflict, JobNotFound, ModelNotReady
from ..canary import CanaryState
from ..settings import LoopSettings
from ...core.registry import Registry
from .launcher import JobSpec, JobState, Launcher

log = logging.getLogger("tunegate.jobs")
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


class JobManager:
    def __init__(self, registry: Registry, launcher: Launcher, settings_for: Callable[[str], LoopSettings],
                 canary: Callable[[str], CanaryState | None]) -> None:
        self.registry = registry
        self.canary = canary  # the model's canary, if any: no job while one is on trial
        self.launcher = launcher
        self.settings_for = settings_for
        self.jobs: dict[str, str] = {}  # job id -> model, this run's jobs
        self.running: dict[str, str] = {}  # model -> job id
        self.last: dict[str, dict[str, Any]] = {}  # model -> last finished job's status
        self.new_samples: dict[str, int] = {}  # model -> feedback samples since the last job
        self.finished: dict[tuple[str, str], int] = {}  # (model, state) -> count
        self._ended: set[str] = set()  # job ids whose end is recorded
        self._starting: set[str] = set()
        self._schedules: dict[str, asyncio.Task] = {}

    async def start(self, model: str, *, reason: str = "manual") -> dict[str, Any]:
        if model in self.running or model in self._starting:
            raise Conflict(f"model {model!r} already has fine-tune job {self.running.get(model, '')} running")
        record = self.registry.record(model)
        trial = self.canary(model)
        if trial is not None and trial.live:
            raise Conflict(f"model {model!r} has version {trial.version} on trial as a canary; "
                           "promote or roll it back first")
        if not record.serving:
            raise ModelNotReady(f"model {model!r} has no version serving to fine-tune")
        stable = self.registry.route(model, split=False).version
        settings = self.settings_for(model)
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
        spec = JobSpec(job_id=f"{model}-{stamp}-{uuid.uuid4().hex[:6]}", model=model,
                       repo=str(self.registry.repo.root), data=tuple(settings.data), version=stable,
                       np=settings.np, options=tuple(settings.options))
        self._starting.add(model)
        try:
            status = await self.launcher.start(spec)
        finally:
            self._starting.discard(model)
        self.jobs[spec.job_id] = model
        self.new_samples[model] = 0
        log.info("model %s: fine-tune job %s started (%s) from version %s", model, spec.job_id, reason, stable)
        if status.state.finished:
            self._record_end(model, status.to_dict())
        else:
            self.running[model] = spec.job_id
            self.registry.spawn(self._follow(model, spec.job_id))
        return {**status.to_dict(), "trigger": reason, "base_version": stable}

    async def _follow(self, model: str, job_id: str) -> None:
        try:
            status = await self.launcher.wait(job_id)
        finally:
            if self.running.get(model) == job_id:
                self.running.pop(model)
        self._record_end(model, status.to_dict())
        if status.state == JobState.SUCCEEDED:
            # Do not wait for the repository poll: the canary starts now.
            await self.registry.reconcile(model)

    def _record_end(self, model: str, status: dict[str, Any]) -> None:
        """Record a job's end once, by whichever sees it first: the follower task, or a
        status request (so metadata never lags behind what the job route answered)."""
        if status["job_id"] in self._ended:
            return
        self._ended.add(status["job_id"])
        if self.running.get(model) == status["job_id"]:
            self.running.pop(model)
        self.last[model] = status
        key = (model, status["state"])
        self.finished[key] = self.finished.get(key, 0) + 1

    async def status(self, model: str, job_id: str) -> dict[str, Any]:
        # A job id names a directory (local jobs) or a Kubernetes object: nothing else reaches them.
        if not _JOB_ID.fullmatch(job_id) or ".." in job_id:
            raise JobNotFound(f"model {model!r} has no fine-tune job {job_id[:64]!r}: job ids are up to 200 "
                              "letters, digits, '.', '_' and '-', as returned when the job started")
        try:
            status = await self.launcher.status(job_id)
        except KeyError:
            raise JobNotFound(f"model {model!r} has no fine-tune job {job_id!r}") from None
        if status.model != model:
            raise JobNotFound(f"model {model!r} has no fine-tune job {job_id!r}")
        if status.state.finished and self.jobs.get(job_id) == model:
            self._record_end(model, status.to_dict())
        return status.to_dict()

    async def cancel(self, model: str, job_id: str) -> dict[str, Any]:
        await self.status(model, job_id)  # 404 for another model's job
        return (await self.launcher.cancel(job_id)).to_dict()

    # ------------------------------------------------------------- triggers
    def feedback_arrived(self, model: str, samples: int) -> None:
        self.new_samples[model] = self.new_samples.get(model, 0) + samples
        settings = self.settings_for(model)
        if settings.trigger == "samples" and self.new_samples[model] >= settings.trigger_samples:
            self._try_start(model, f"{self.new_samples[model]} new feedback samples")
        elif settings.trigger == "schedule" and model not in self._schedules:
            self._schedules[model] = self.registry.spawn(self._schedule(model, settings.trigger_interval_seconds))

    def _try_start(self, model: str, reason: str) -> None:
        trial = self.canary(model)
        busy = model in self.running or model in self._starting or (trial is not None and trial.live)
        if not busy:
            self.registry.spawn(self._start_quietly(model, reason))

    async def _start_quietly(self, model: str, reason: str) -> None:
        try:
            await self.start(model, reason=reason)
        except Exception as exc:  # a trigger has no client to answer; the log is the report
            log.error("model %s: could not start a fine-tune job (%s): %s", model, reason,
                      getattr(exc, "message", exc))

    async def _schedule(self, model: str, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            if self.new_samples.get(model, 0) > 0:
                self._try_start(model, f"schedule ({self.new_samples[model]} new samples)")

    def parameters(self, model: str) -> dict[str, Any]:
        out: dict[str, Any] = {"finetune_trigger": self.settings_for(model).trigger,
                               "feedback_samples_since_job": self.new_samples.get(model, 0)}
        if model in self.running:
            out["finetune_job"] = self.running[model]
        if model in self.last:
            last = self.last[model]
            out["last_finetune_job"] = {k: last[k] for k in ("job_id", "state", "message", "finished_at")}
        return out

    async def close(self) -> None:
        for task in self._schedules.values():
            task.cancel()
        await self.launcher.close()
