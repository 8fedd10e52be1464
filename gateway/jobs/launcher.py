"""The launcher interface: how the gateway starts a fine-tune job without importing the trainer.

A job is always the same command, ``tunegate finetune ... --json`` (see :meth:`JobSpec.argv`);
a launcher decides where it runs: a local ``horovodrun`` subprocess (the embedded default)
or a Kubernetes Job (the Helm chart's launcher). The command's exit status says how it ended
(``trainer/errors.py``): 0 published, 2 bad input, 3 not promoted (failed the gate), anything
else failed; its JSON on stdout (the last JSON object printed) is the job's result.
"""

from __future__ import annotations

import abc
import datetime as dt
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

# `tunegate finetune` exit statuses (trainer/errors.py); repeated here because the gateway
# must not import the trainer.
EXIT_PUBLISHED = 0
EXIT_BAD_INPUT = 2
EXIT_NOT_PROMOTED = 3


class JobState(str, Enum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"  # a new version was published
    NOT_PROMOTED = "not_promoted"  # trained, but the candidate failed the gate
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self not in (JobState.PENDING, JobState.RUNNING)

    @classmethod
    def from_exit_code(cls, code: int) -> JobState:
        if code == EXIT_PUBLISHED:
            return cls.SUCCEEDED
        if code == EXIT_NOT_PROMOTED:
            return cls.NOT_PROMOTED
        return cls.FAILED


@dataclass(frozen=True)
class JobSpec:
    """What to fine-tune. ``data`` holds paths or ``feedback:`` (the model's feedback store),
    as ``tunegate finetune --data`` takes them; ``options`` are further ``tunegate finetune``
    flags (e.g. ``("--epochs", "5", "--gate", "accuracy:+0.0")``)."""

    job_id: str
    model: str
    repo: str
    data: tuple[str, ...] = ("feedback:",)
    version: int | None = None  # default: the serving version
    np: int | None = None
    options: tuple[str, ...] = ()

    def argv(self, *, repo: str | None = None, program: tuple[str, ...] = ("tunegate",)) -> list[str]:
        """The command line; ``repo`` overrides where the repository is mounted (a pod may
        see it at another path than the gateway)."""
        argv = [*program, "finetune", "--repo", repo or self.repo, "--model", self.model, "--json",
                "--data", *self.data]
        if self.version is not None:
            argv += ["--version", str(self.version)]
        if self.np is not None:
            argv += ["--np", str(self.np)]
        return argv + list(self.options)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class JobStatus:
    job_id: str
    model: str
    state: JobState = JobState.PENDING
    created_at: str = field(default_factory=_now)
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    message: str = ""
    log_tail: list[str] = field(default_factory=list)
    result: dict[str, Any] | None = None  # the job's JSON outcome (version published, metrics, gate)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        return data


class Launcher(abc.ABC):
    """Starts, watches and cancels fine-tune jobs. All methods are called on the event loop
    and must not block it."""

    @abc.abstractmethod
    async def start(self, spec: JobSpec) -> JobStatus:
        """Start the job and return at once (state pending or running)."""

    @abc.abstractmethod
    async def status(self, job_id: str) -> JobStatus:
        """The job's current state; raises ``KeyError`` for an unknown id."""

    @abc.abstractmethod
    async def wait(self, job_id: str) -> JobStatus:
        """Wait until the job has finished and return its final state."""

    @abc.abstractmethod
    async def cancel(self, job_id: str) -> JobStatus:
        """Stop the job (no partial version is ever published: the trainer guarantees it)."""

    async def close(self) -> None:
        """Release what the launcher holds; running jobs are cancelled."""
