"""The embedded launcher: ``tunegate finetune ... --json`` as a local subprocess.

Each job gets ``<jobs_dir>/<job_id>/`` with ``job.log`` (the trainer's progress, its
stderr), ``stdout.txt`` (its JSON outcome), ``process.json`` (its process record: pid, host,
the process's start time) and, once finished, ``exit_code`` and ``status.json``. The job
writes into those files itself, not through pipes to the gateway, and runs in its own
session: it outlives the process that started it. So a loop leader that dies leaves a job
that the next leader on the same host finds again by its record and follows to its end,
instead of starting a second one (``gateway.loop.jobs.manager``). A small shell wrapper
writes the exit status, which only the parent could otherwise read. The job's process group
(horovodrun and its ranks) is cancelled as a whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from model_repo.jobs import _now

from ...core.errors import Conflict
from .launcher import JobSpec, JobState, JobStatus, Launcher

log = logging.getLogger("tunegate.jobs")

TAIL_LINES = 50
_STDOUT_LIMIT = 4 << 20  # the outcome JSON is small; a runaway job's output is not kept
_KILL_GRACE_SECONDS = 10.0
_POLL_SECONDS = 0.25
# Runs the job, then records its exit status atomically where any process can read it.
_WRAPPER = ('"$@"; code=$?; echo "$code" > "$TUNEGATE_JOB_DIR/.exit_code.tmp" && '
            'mv "$TUNEGATE_JOB_DIR/.exit_code.tmp" "$TUNEGATE_JOB_DIR/exit_code"; exit "$code"')


@dataclass(eq=False)
class _Job:
    spec: JobSpec | None  # None: adopted from its record, started by another process
    status: JobStatus
    directory: Path
    pid: int | None = None
    started: str | None = None  # the process's start time (/proc), so a reused pid is not it
    process: asyncio.subprocess.Process | None = None  # ours: reaped by asyncio
    task: asyncio.Task | None = None
    cancelled: bool = False


class LocalLauncher(Launcher):
    def __init__(self, jobs_dir: str | os.PathLike[str], *, program: tuple[str, ...] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.jobs_dir = Path(jobs_dir)
        self.program = tuple(program or (sys.executable, "-m", "tunegate_cli"))
        self.env = env
        self._jobs: dict[str, _Job] = {}

    async def start(self, spec: JobSpec) -> JobStatus:
        busy = [j for j in self._jobs.values() if j.status.model == spec.model and not j.status.state.finished]
        if busy:
            raise Conflict(f"model {spec.model!r} already has fine-tune job {busy[0].status.job_id} running")
        if spec.job_id in self._jobs:
            raise Conflict(f"job id {spec.job_id!r} is taken")
        directory = self.jobs_dir / spec.job_id
        await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=False)
        job = self._jobs[spec.job_id] = _Job(spec, JobStatus(spec.job_id, spec.model), directory)
        argv = self.command(spec)
        await asyncio.to_thread((directory / "spec.json").write_text,
                                json.dumps({"argv": argv, "model": spec.model}, indent=2))
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env["TUNEGATE_JOB_DIR"] = str(directory.absolute())
        try:
            out, err = await asyncio.to_thread(_open_outputs, directory)
            try:
                job.process = await asyncio.create_subprocess_exec(
                    "/bin/sh", "-c", _WRAPPER, "tunegate-job", *argv, stdout=out, stderr=err,
                    stdin=asyncio.subprocess.DEVNULL, env=env, start_new_session=True)
            finally:
                out.close()
                err.close()
        except OSError as exc:
            self._finish(job, JobState.FAILED, None, f"could not start {argv[0]}: {exc}")
            await asyncio.to_thread(self._write_status, job)
            return await asyncio.to_thread(self.snapshot, job)
        job.pid, job.started = job.process.pid, _process_start(job.process.pid)
        job.status.state, job.status.started_at = JobState.RUNNING, _now()
        record = {"pid": job.pid, "host": socket.gethostname(), "process_start": job.started,
                  "started_at": job.status.started_at, "model": spec.model}
        await asyncio.to_thread((directory / "process.json").write_text, json.dumps(record, indent=2))
        log.info("fine-tune job %s started (pid %s): %s", spec.job_id, job.pid, " ".join(argv))
        job.task = asyncio.create_task(self._supervise(job), name=f"job {spec.job_id}")
        return await asyncio.to_thread(self.snapshot, job)

    def command(self, spec: JobSpec) -> list[str]:
        """The job's command line (a subclass adds where the ranks run)."""
        return spec.argv(program=self.program)

    async def _supervise(self, job: _Job) -> None:
        """Wait for the job's end (its exit status file, or its process gone) and record it."""
        while True:
            code = await asyncio.to_thread(_read_exit_code, job.directory)
            if code is not None or not self._alive(job):
                break
            await asyncio.sleep(_POLL_SECONDS)
        if code is None:  # gone without a word: killed, or its host's record is not ours to follow
            code = await asyncio.to_thread(_read_exit_code, job.directory)
        text = await asyncio.to_thread(_read_tail_bytes, job.directory / "stdout.txt", _STDOUT_LIMIT)
        result = _last_json_object(text)
        tail = await asyncio.to_thread(_log_tail, job.directory)
        if job.cancelled:
            state, message = JobState.CANCELLED, "cancelled"
        elif code is None:
            state, message = JobState.FAILED, ("the job's process ended without reporting an exit status "
                                               "(killed?)" + (f": {tail[-1]}" if tail else ""))
        else:
            state = JobState.from_exit_code(code)
            message = _message(state, code, result, tail)
        self._finish(job, state, code, message, result)
        await asyncio.to_thread(self._write_status, job)
        log.info("fine-tune job %s: %s (exit %s): %s", job.status.job_id, state.value, code, message)

    def _alive(self, job: _Job) -> bool:
        if job.process is not None:
            return job.process.returncode is None
        return job.pid is not None and _process_start(job.pid) == job.started

    @staticmethod
    def _finish(job: _Job, state: JobState, code: int | None, message: str, result: dict | None = None) -> None:
        job.status.state = state
        job.status.exit_code = code
        job.status.message = message
        job.status.result = result
        job.status.finished_at = _now()

    def _write_status(self, job: _Job) -> None:
        status = self.snapshot(job).to_dict()
        status["log_tail"] = _log_tail(job.directory)
        (job.directory / "status.json").write_text(json.dumps(status, indent=2, default=str))

    @staticmethod
    def snapshot(job: _Job) -> JobStatus:
        status = JobStatus(**{**job.status.__dict__})
        status.log_tail = _log_tail(job.directory)
        return status

    async def status(self, job_id: str) -> JobStatus:
        job = await self._find(job_id)
        if job is None:
            return await asyncio.to_thread(self._read_status, job_id)  # a job of an earlier run
        return await asyncio.to_thread(self.snapshot, job)

    async def _find(self, job_id: str) -> _Job | None:
        """This launcher's job, or a running one another process started, found by its
        process record and followed from now on; None for a finished or unknown one."""
        job = self._jobs.get(job_id)
        if job is None and (job := await asyncio.to_thread(self._adopt, job_id)) is not None:
            self._jobs[job_id] = job
            job.task = asyncio.create_task(self._supervise(job), name=f"job {job_id}")
        return job

    def _adopt(self, job_id: str) -> _Job | None:
        """The job ``job_id``'s process record says is running (blocking)."""
        if "/" in job_id or job_id.startswith("."):
            return None
        directory = self.jobs_dir / job_id
        if (directory / "status.json").exists():
            return None  # finished: its status file says how
        try:
            record = json.loads((directory / "process.json").read_text())
        except (OSError, ValueError):
            return None
        status = JobStatus(job_id, str(record.get("model", "")), state=JobState.RUNNING,
                           started_at=record.get("started_at"))
        job = _Job(None, status, directory, pid=int(record["pid"]), started=record.get("process_start"))
        if record.get("host") != socket.gethostname():
            # Another host's process cannot be watched from here; its record counts as ended.
            job.pid = None
        return job

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
        job = await self._find(job_id)
        if job is None:
            return await self.status(job_id)
        await asyncio.shield(job.task)
        return await asyncio.to_thread(self.snapshot, job)

    async def cancel(self, job_id: str) -> JobStatus:
        job = await self._find(job_id)
        if job is None:
            return await self.status(job_id)
        if job.status.state.finished or job.pid is None:
            return await asyncio.to_thread(self.snapshot, job)
        job.cancelled = True
        # horovodrun's ranks share its process group: TERM all of it, then KILL what stays.
        _signal_group(job.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(job.task), _KILL_GRACE_SECONDS)
        except TimeoutError:
            _signal_group(job.pid, signal.SIGKILL)
            await asyncio.shield(job.task)
        return await asyncio.to_thread(self.snapshot, job)

    async def close(self) -> None:
        """Cancel the jobs this process started (adopted ones run on for the next leader)."""
        for job in list(self._jobs.values()):
            if job.process is not None and not job.status.state.finished:
                await self.cancel(job.status.job_id)
            elif job.task is not None:
                job.task.cancel()


def _open_outputs(directory: Path):
    return open(directory / "stdout.txt", "ab"), open(directory / "job.log", "ab")


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc), None if it is gone; with
    the pid it names one process, where a pid alone may be reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] == "Z" else fields[19]  # a zombie has ended


def _read_exit_code(directory: Path) -> int | None:
    try:
        return int((directory / "exit_code").read_text().strip())
    except (OSError, ValueError):
        return None


def _read_tail_bytes(path: Path, limit: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - limit))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _log_tail(directory: Path) -> list[str]:
    text = _read_tail_bytes(directory / "job.log", 64 << 10)
    return text.splitlines()[-TAIL_LINES:]


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
