"""The fine-tune job contract: what the gateway starts, the trainer runs, and ``tunegate
finetune --submit`` submits.

It lives here, at the bottom layer, because all three need it and neither the gateway nor
the trainer may import the other (docs/architecture.md, "Imports"). Stdlib only.

A job is always the same command, ``tunegate finetune ... --json`` (see :meth:`JobSpec.argv`);
a launcher decides where it runs. The command's exit status says how it ended (the
``EXIT_*`` constants, the single definition ``trainer/errors.py`` uses too): 0 published,
2 bad input, 3 not promoted (failed the gate), anything else failed; its JSON on stdout (the
last JSON object printed), or the result file of a cluster job (:func:`result_path`), is the
job's result.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

EXIT_OK = EXIT_PUBLISHED = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_NOT_PROMOTED = 3

# Beside the model's versions: Triton, the gateway and the repository ignore dot entries.
RESULT_DIR = ".finetune"


def result_path(repo: str | Path, model: str, name: str) -> Path:
    """Where rank 0 of cluster job ``name`` writes its outcome, on the shared repository."""
    return Path(repo) / model / RESULT_DIR / f"{name}.json"


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
