"""The embedded launcher: ``tunegate finetune ... --json`` as a local subprocess.

Each job gets ``<jobs_dir>/<job_id>/`` with ``job.log`` (the trainer's progress, its
stderr), ``stdout.txt`` (its JSON outcome) and, once finished, ``status.json`` (so a job's
outcome can still be read after the gateway restarts). The newest log lines are also kept
in memory for ``status()``. The job runs in its own process group (horovodrun and its
ranks), so cancelling kills all of it. One job per model at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from model_repo.jobs import _now

from ...core.errors import Conflict
from .launcher import JobSpec, JobState, JobStatus, Launcher

log = logging.getLogger("tunegate.jobs")

TAIL_LINES = 50
_STDOUT_LIMIT = 4 << 20  # the outcome JSON is small; a runaway job's output is not kept
_KILL_GRACE_SECONDS = 10.0


@dataclass(eq=False)
class _Job:
    spec: JobSpec
    status: JobStatus
    directory: Path
    process: asyncio.subprocess.Process | None = None
    task: asyncio.Task | None = None
    tail: deque = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    cancelled: bool = False


class LocalLauncher(Launcher):
    def __init__(self, jobs_dir: str | os.PathLike[str], *, program: tuple[str, ...] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.jobs_dir = Path(jobs_dir)
        self.program = tuple(program or (sys.executable, "-m", "tunegate_cli"))
        self.env = env
        self._jobs: dict[str, _Job] = {}

    async def start(self, spec: JobSpec) -> JobStatus:
        busy = [j for j in self._jobs.values() if j.spec.model == spec.model and not j.status.state.finished]
        if busy:
            raise Conflict(f"model {spec.model!r} already has fine-tune job {busy[0].spec.job_id} running")
        if spec.job_id in self._jobs:
            raise Conflict(f"job id {spec.job_id!r} is taken")
        directory = self.jobs_dir / spec.job_id
        await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=False)
        job = _Job(spec, JobStatus(spec.job_id, spec.model), directory)
        self._jobs[spec.job_id] = job
        argv = self.command(spec)
        await asyncio.to_thread((directory / "spec.json").write_text, json.dumps({"argv": argv}, indent=2))
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        try:
            job.process = await asyncio.create_subprocess_exec(
                *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                stdin=asyncio.subprocess.DEVNULL, env=env, start_new_session=True)
        except OSError as exc:
            self._finish(job, JobState.FAILED, None, f"could not start {argv[0]}: {exc}")
            await asyncio.to_thread(self._write_status, job)
            return self._snapshot(job)
        job.status.state = JobState.RUNNING
        job.status.started_at = _now()
        log.info("fine-tune job %s started (pid %s): %s", spec.job_id, job.process.pid, " ".join(argv))
        job.task = asyncio.create_task(self._supervise(job), name=f"job {spec.job_id}")
        return self._snapshot(job)

    def command(self, spec: JobSpec) -> list[str]:
        """The job's command line (a subclass adds where the ranks run)."""
        return spec.argv(program=self.program)

    async def _supervise(self, job: _Job) -> None:
        assert job.process is not None and job.process.stdout is not None and job.process.stderr is not None
        stdout = bytearray()
        log_file = await asyncio.to_thread(open, job.directory / "job.log", "ab")
        try:
            async def pump_stderr() -> None:
                partial = b""
                while chunk := await job.process.stderr.read(1 << 16):
                    await asyncio.to_thread(_write_flush, log_file, chunk)
                    *lines, partial = (partial + chunk).split(b"\n")
                    job.tail.extend(line.decode(errors="replace") for line in lines)
                if partial:
                    job.tail.append(partial.decode(errors="replace"))

            async def pump_stdout() -> None:
                while chunk := await job.process.stdout.read(1 << 16):
                    if len(stdout) < _STDOUT_LIMIT:
                        stdout.extend(chunk)

            await asyncio.gather(pump_stderr(), pump_stdout())
            code = await job.process.wait()
        finally:
            await asyncio.to_thread(log_file.close)
        text = stdout.decode(errors="replace")
        await asyncio.to_thread((job.directory / "stdout.txt").write_text, text)
        result = _last_json_object(text)
        if job.cancelled:
            state, message = JobState.CANCELLED, "cancelled"
        else:
            state = JobState.from_exit_code(code)
            message = _message(state, code, result, list(job.tail))
        self._finish(job, state, code, message, result)
        await asyncio.to_thread(self._write_status, job)
        log.info("fine-tune job %s: %s (exit %s): %s", job.spec.job_id, state.value, code, message)

    @staticmethod
    def _finish(job: _Job, state: JobState, code: int | None, message: str, result: dict | None = None) -> None:
        job.status.state = state
        job.status.exit_code = code
        job.status.message = message
        job.status.result = result
        job.status.finished_at = _now()

    def _write_status(self, job: _Job) -> None:
        (job.directory / "status.json").write_text(json.dumps(self._snapshot(job).to_dict(), indent=2, default=str))

    def _snapshot(self, job: _Job) -> JobStatus:
        status = JobStatus(**{**job.status.__dict__})
        status.log_tail = list(job.tail)
        return status

    async def status(self, job_id: str) -> JobStatus:
        job = self._jobs.get(job_id)
        if job is not None:
            return self._snapshot(job)
        return await asyncio.to_thread(self._read_status, job_id)  # a job of an earlier run

    def _read_status(self, job_id: str) -> JobStatus:
        if "/" in job_id or job_id.startswith("."):
            raise KeyError(job_id)
        try:
            data = json.loads((self.jobs_dir / job_id / "status.json").read_text())
        except (OSError, json.JSONDecodeError):
            raise KeyError(job_id) from None
        data["state"] = JobState(data["state"])
        return JobStatus(**data)

    async def wait(self, job_id: str) -> JobStatus:
        job = self._jobs.get(job_id)
        if job is None:
            return await self.status(job_id)
        if job.task is not None:
            await asyncio.shield(job.task)
        return self._snapshot(job)

    async def cancel(self, job_id: str) -> JobStatus:
        job = self._jobs.get(job_id)
        if job is None:
            return await self.status(job_id)
        if job.status.state.finished or job.process is None:
            return self._snapshot(job)
        job.cancelled = True
        # horovodrun's ranks share its process group: TERM all of it, then KILL what stays.
        _signal_group(job.process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(job.task), _KILL_GRACE_SECONDS)
        except TimeoutError:
            _signal_group(job.process.pid, signal.SIGKILL)
            await asyncio.shield(job.task)
        return self._snapshot(job)

    async def close(self) -> None:
        for job in list(self._jobs.values()):
            if not job.status.state.finished:
                await self.cancel(job.spec.job_id)


def _write_flush(f, chunk: bytes) -> None:
    f.write(chunk)
    f.flush()


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)  # start_new_session: the group id is the leader's pid


def _last_json_object(text: str) -> dict | None:
    """The last JSON object printed at the start of a line (``--json`` prints it last)."""
    starts = [m.start() for m in re.finditer(r"^\{", text, re.MULTILINE)]
    for start in reversed(starts):
        try:
            value, _ = json.JSONDecoder().raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _message(state: JobState, code: int, result: dict | None, tail: list[str]) -> str:
    """Why the job ended as it did, in one line."""
    if state == JobState.SUCCEEDED:
        version = (result or {}).get("version")
        return f"published version {version}" if version is not None else "published"
    if result and result.get("message"):
        return str(result["message"])
    errors = [line for line in tail if "error" in line.lower()]
    last = (errors or [line for line in tail if line.strip()] or [""])[-1].strip()
    return f"exit status {code}" + (f": {last}" if last else "")
