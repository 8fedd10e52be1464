"""When fine-tune jobs start, and what happens when they end: the loop leader's duty.

Triggers per model (``LoopSettings.trigger``): ``manual`` (the control route only),
``samples`` (also once ``trigger_samples`` new feedback rows are in the model's store),
``schedule`` (also every ``trigger_interval_seconds``, if new feedback arrived), ``drift``
(also once the input drift score, :mod:`gateway.loop.drift`, has stayed above
``drift_threshold`` for ``drift_sustain_seconds`` and ``drift_min_labelled`` new feedback
rows are in). *New* rows are those numbered above the ledger's baseline
(``model_repo.ledger``: the newest data snapshot of any job, whoever launched it), so rows
a command-line job trained on are not new to the gateway, after a restart too.

One job per model at a time, and none while the repository holds a candidate nobody has
decided on (in shadow or canary): the next job must start from a decided version. A job's
end is recorded only after its version is registered (the canary exists first), so the
trigger never sees the gap between them; a stopping server starts no job.

Only the elected leader (``gateway.loop.leadership``) starts, follows and cancels jobs, so
a trigger fires once however many workers and replicas received the feedback: it counts
rows in the shared feedback store, not requests it saw. Its record of each model's job is
on the repository (``jobs.record``), written before a job is launched, so a leader that
dies is replaced by one that follows the same job (found again by its Kubernetes Job name
or local process record) instead of starting a second. A follower hands a start or cancel
call to the leader (``gateway.loop.leader_requests``) and answers with the leader's reply.

A job fine-tunes the model's *stable* version (pinned with ``--version``, so a rejected
canary, though still newest on disk, is never the base). When a job publishes, the model
is reconciled at once, which puts the new version in service as a canary.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from model_repo.canary_state import read_plan
from model_repo.ledger import model_baseline, record_attempt

from ...core.errors import Conflict, JobNotFound, ModelNotReady, ServerNotReady
from ...core.registry import Registry
from ..canary import CanaryState
from ..leader_requests import RequestBox
from ..settings import LoopSettings
from .launcher import JobSpec, JobState, Launcher
from .record import JobRecord, read_record, write_record
from .value import ValueCheck

log = logging.getLogger("tunegate.jobs")
_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


class JobManager:
    def __init__(self, registry: Registry, launcher: Launcher, settings_for: Callable[[str], LoopSettings],
                 canary: Callable[[str], CanaryState | None], *, is_leader: Callable[[], bool],
                 requests: RequestBox, poll_seconds: float, request_timeout: float,
                 drift: Callable[[str], float | None] | None = None) -> None:
        self.registry = registry
        self.drift = drift  # model -> seconds its drift score has stayed above the threshold, or None
        self.canary = canary  # the model's canary, if any: no job while one is on trial
        self.launcher = launcher
        self.settings_for = settings_for
        self.is_leader = is_leader
        self.requests = requests
        self.poll_seconds = poll_seconds
        self.request_timeout = request_timeout
        self.records: dict[str, JobRecord] = {}  # model -> its record as last read or written
        self.new_samples: dict[str, int] = {}  # model -> feedback rows after the ledger's baseline
        self.baselines: dict[str, int] = {}  # model -> that baseline
        self.waiting: dict[str, str] = {}  # model -> why a due trigger starts no job yet
        self.value = ValueCheck(registry.repo)
        self.finished: dict[tuple[str, str], int] = {}  # (model, state) -> count, ended under this leader
        self._follows: dict[str, asyncio.Task] = {}  # model -> the task following its job
        self._starting: set[str] = set()
        # (rows of a model's store after a number, its last number): the feedback service's scan.
        self.rows_after: Callable[[str, int], Awaitable[tuple[int, int]]] = _no_rows
        self.closing = False
        self._since: dict[str, float] = {}  # model -> when the schedule trigger last started a job
        self._nudge = asyncio.Event()
        self._duty: asyncio.Task | None = None

    @property
    def running(self) -> dict[str, str]:
        """model -> the id of its running job, as the records say."""
        return {m: r.running_id for m, r in self.records.items() if r.running_id}

    # ------------------------------------------------------------- control
    async def start(self, model: str, *, reason: str = "manual") -> dict[str, Any]:
        self.registry.record(model)  # 404/503 here, before asking anyone
        if not self.is_leader():
            return await self.requests.ask({"action": "start", "model": model, "reason": reason},
                                           self.request_timeout)
        return await self._start(model, reason)

    async def _start(self, model: str, reason: str) -> dict[str, Any]:
        if self.closing or self.registry.shutting_down:
            raise ServerNotReady("the server is shutting down: no fine-tune job starts")
        if model in self._starting or model in self._follows:
            raise Conflict(f"model {model!r} already has fine-tune job {self.running.get(model, '')} running")
        record = await self._read(model)
        if record.running_id:
            await self._adopt(model, record)
            if model in self._follows:
                raise Conflict(f"model {model!r} already has fine-tune job {record.running_id} running")
        registered = self.registry.record(model)
        trial = self.canary(model)
        if trial is not None and trial.live:
            raise Conflict(f"model {model!r} has version {trial.version} on trial as a canary; "
                           "promote or roll it back first")
        if not registered.serving:
            raise ModelNotReady(f"model {model!r} has no version serving to fine-tune")
        # The repository, not this process's memory: a candidate another actor published (the
        # command line) may not be registered here yet.
        repo, canaries = self.registry.repo, self.settings_for(model).canary
        plan = await asyncio.to_thread(lambda: read_plan(repo, model, repo.read_config(model), canaries))
        if plan.canary is not None:
            raise Conflict(f"model {model!r} has version {plan.canary} waiting for its canary decision; "
                           "promote or roll it back first")
        stable = plan.stable[-1] if plan.stable else self.registry.route(model, split=False).version
        settings = self.settings_for(model)
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
        spec = JobSpec(job_id=f"{model}-{stamp}-{uuid.uuid4().hex[:6]}", model=model,
                       repo=str(self.registry.repo.root), data=tuple(settings.data), version=stable,
                       np=settings.np, options=_job_options(settings))
        self._starting.add(model)
        try:
            _, through = await self.rows_after(model, 0)
            # Recorded before it is launched: a leader dying in between leaves a record a new
            # leader can check, never a job nobody knows of.
            record.running = {"job_id": spec.job_id, "base_version": stable, "trigger": reason,
                              "started_at": _now(), "feedback_through": through}
            await self._write(model, record)
            try:
                status = await self.launcher.start(spec)
            except BaseException:
                record.running = None
                await self._write(model, record)
                raise
        finally:
            self._starting.discard(model)
        self.new_samples[model] = 0
        self._since[model] = time.monotonic()
        log.info("model %s: fine-tune job %s started (%s) from version %s", model, spec.job_id, reason, stable)
        if status.state.finished:
            await self._record_end(model, status.to_dict())
        else:
            self._follows[model] = self.registry.spawn(self._follow(model, spec.job_id))
        return {**status.to_dict(), "trigger": reason, "base_version": stable}

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
        if status.state.finished and self.is_leader() and self.running.get(model) == job_id:
            await self._record_end(model, status.to_dict())
        return status.to_dict()

    async def cancel(self, model: str, job_id: str) -> dict[str, Any]:
        await self.status(model, job_id)  # 404 for another model's job
        if not self.is_leader():
            return await self.requests.ask({"action": "cancel", "model": model, "job_id": job_id},
                                           self.request_timeout)
        return (await self.launcher.cancel(job_id)).to_dict()

    # ------------------------------------------------------------- following
    async def _adopt(self, model: str, record: JobRecord) -> None:
        """Follow the job ``record`` names (a previous leader's), or record how it ended."""
        job_id = record.running_id
        if job_id is None or model in self._follows:
            return
        try:
            status = await self.launcher.status(job_id)
        except KeyError:
            await self._record_end(model, {"job_id": job_id, "model": model, "state": JobState.FAILED.value,
                                           "message": "the launcher has no such job (it never started)",
                                           "finished_at": _now()})
            return
        if status.state.finished:
            await self._record_end(model, status.to_dict())
        else:
            log.info("model %s: following fine-tune job %s started by an earlier leader", model, job_id)
            self._follows[model] = self.registry.spawn(self._follow(model, job_id))

    async def _follow(self, model: str, job_id: str) -> None:
        try:
            status = await self.launcher.wait(job_id)
        finally:
            self._follows.pop(model, None)
        await self._record_end(model, status.to_dict())

    async def _record_end(self, model: str, status: dict[str, Any]) -> None:
        """Record a job's end once, by whichever sees it first: the follower task, or a
        status request (so metadata never lags behind what the job route answered)."""
        record = await self._read(model)
        if record.running_id != status["job_id"]:
            return
        if status["state"] == JobState.SUCCEEDED.value:
            # Its version becomes the candidate before the job stops counting as running: the
            # trigger never sees a moment with neither (the repository poll would come later).
            await self.registry.reconcile(model)
        elif status["state"] in (JobState.FAILED.value, JobState.CANCELLED.value):
            # The rows it had are not new again (a job that publishes nothing records its own).
            await asyncio.to_thread(record_attempt, self.registry.repo.model_dir(model),
                                    through=record.running.get("feedback_through"), outcome=status["state"],
                                    base_version=record.running.get("base_version"), job=status["job_id"],
                                    message=str(status.get("message", "")))
        record.running, record.last = None, status
        await self._write(model, record)
        key = (model, status["state"])
        self.finished[key] = self.finished.get(key, 0) + 1

    # ------------------------------------------------------------- the leader's duties
    async def elected(self) -> None:
        """This process now leads: follow the jobs the records name, then watch the triggers."""
        models = await asyncio.to_thread(self.registry.repo.list_models)
        for model in models:
            await self._adopt(model, await self._read(model))
        now = time.monotonic()
        for model in models:
            self._since.setdefault(model, now)

    async def deposed(self) -> None:
        """Leadership went elsewhere: stop following (the jobs run on; the next leader follows)."""
        for task in self._follows.values():
            task.cancel()
        self._follows.clear()

    def begin(self) -> None:
        self._duty = self.registry.spawn(self._duties())

    async def _duties(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._nudge.wait(), self.poll_seconds)
            except TimeoutError:
                pass
            self._nudge.clear()
            if self.closing or self.registry.shutting_down:
                return
            try:
                for model in [r.name for r in self.registry.records()]:
                    await self._read(model)
                    if self.settings_for(model).trigger != "manual":
                        baseline = await asyncio.to_thread(model_baseline, self.registry.repo, model)
                        self.baselines[model] = baseline
                        self.new_samples[model], _ = await self.rows_after(model, baseline)
                if self.is_leader():
                    await self._answer_requests()
                    for model in list(self.records):
                        await self._check_trigger(model)
            except Exception:  # a duty that fails once must not end the loop for good
                log.exception("loop duties failed; retrying")

    async def _answer_requests(self) -> None:
        box = self.requests
        for path, request in await asyncio.to_thread(box.pending):
            try:
                if request is None or request.get("action") not in ("start", "cancel"):
                    raise Conflict(f"unreadable loop request {path.name}")
                model = str(request["model"])
                if request["action"] == "start":
                    result = await self._start(model, str(request.get("reason", "manual")))
                else:
                    result = (await self.launcher.cancel(str(request["job_id"]))).to_dict()
            except Exception as exc:
                await asyncio.to_thread(box.answer, path, error=exc)
            else:
                await asyncio.to_thread(box.answer, path, result=result)

    async def _check_trigger(self, model: str) -> None:
        settings = self.settings_for(model)
        if settings.trigger == "manual":
            return
        record = self.records.get(model) or JobRecord()
        new = self.new_samples.get(model, 0)
        busy = record.running_id is not None or model in self._starting or self._on_trial(model)
        reason = None if busy or new == 0 else self._due(model, settings, new)
        if reason is None:
            self.waiting.pop(model, None)
            return
        # Due on rows (or drift): now whether another job can help (gateway.loop.jobs.value).
        wait = await self.value.wait_reason(model, settings)
        if wait is None and settings.trigger != "drift":
            stable = self.registry.route(model, split=False)
            evidence = await self.value.evidence(model, stable, self.baselines.get(model, 0), new, settings)
            wait = None if evidence.worse else f"no evidence another job would help: {evidence.why}"
            reason = f"{reason}; {evidence.why}"
        if wait is not None:
            self.waiting[model] = wait
            return
        self.waiting.pop(model, None)
        await self._start_quietly(model, reason)

    def _due(self, model: str, settings: LoopSettings, new: int) -> str | None:
        """Why the model's trigger would start a job on its rows (or drift) now, or None."""
        if settings.trigger == "samples" and new >= settings.trigger_samples:
            return f"{new} new feedback samples"
        if (settings.trigger == "schedule"
                and time.monotonic() - self._since.setdefault(model, time.monotonic()) >= settings.trigger_interval_seconds):
            return f"schedule ({new} new samples)"
        if settings.trigger == "drift" and self.drift is not None and new >= settings.drift_min_labelled:
            above = self.drift(model)
            if above is not None and above >= settings.drift_sustain_seconds:
                return f"input drift above {settings.drift_threshold:g} for {above:.0f} s ({new} new samples)"
        return None

    def _on_trial(self, model: str) -> bool:
        trial = self.canary(model)
        return trial is not None and trial.live

    async def _start_quietly(self, model: str, reason: str) -> None:
        try:
            await self._start(model, reason)
        except ServerNotReady:
            return  # stopping: no job, and nothing to retry
        except Exception as exc:  # a trigger has no client to answer; the log is the report
            log.error("model %s: could not start a fine-tune job (%s): %s", model, reason,
                      getattr(exc, "message", exc))

    def feedback_arrived(self, model: str, samples: int) -> None:
        """Feedback was stored here: the leader looks at the triggers now, not at its next poll."""
        self._nudge.set()

    # ------------------------------------------------------------- records
    async def _read(self, model: str) -> JobRecord:
        record = self.records[model] = await asyncio.to_thread(read_record, self.registry.repo.root, model)
        return record

    async def _write(self, model: str, record: JobRecord) -> None:
        await asyncio.to_thread(write_record, self.registry.repo.root, model, record)
        self.records[model] = record

    def parameters(self, model: str) -> dict[str, Any]:
        out: dict[str, Any] = {"finetune_trigger": self.settings_for(model).trigger,
                               "feedback_samples_since_job": self.new_samples.get(model, 0)}
        if model in self.waiting:
            out["finetune_waiting"] = self.waiting[model]
        record = self.records.get(model)
        if record is not None and record.running_id:
            out["finetune_job"] = record.running_id
        if record is not None and record.last:
            out["last_finetune_job"] = {k: record.last.get(k) for k in ("job_id", "state", "message", "finished_at")}
        return out

    async def close(self) -> None:
        self.closing = True
        if self._duty is not None:
            self._duty.cancel()
        await self.deposed()
        await self.launcher.close()


def _job_options(settings: LoopSettings) -> tuple[str, ...]:
    """The loop's row budget for a job (``tunegate finetune --max-rows``), then the user's
    options (a flag they give again wins: argparse keeps the last)."""
    return ("--max-rows", str(settings.train_max_rows), "--replay-fraction", str(settings.train_replay_fraction),
            *settings.options)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _no_rows(model: str, after: int) -> tuple[int, int]:
    return 0, 0

