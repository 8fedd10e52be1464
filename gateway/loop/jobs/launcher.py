"""The launcher interface: how the gateway starts a fine-tune job without importing the trainer.

The job contract (:class:`JobSpec`, :class:`JobState`, :class:`JobStatus`, the exit
statuses) is ``model_repo.jobs``, shared with the trainer and ``tunegate finetune
--submit``; it is re-exported here so the gateway's modules keep one import. A launcher
decides where the job's command runs: a local ``horovodrun`` subprocess (the embedded
default) or a Kubernetes Job (the Helm chart's launcher).
"""

from __future__ import annotations

import abc

from model_repo.jobs import (  # noqa: F401 - re-exported
    EXIT_BAD_INPUT,
    EXIT_NOT_PROMOTED,
    EXIT_PUBLISHED,
    JobSpec,
    JobState,
    JobStatus,
)

__all__ = ["EXIT_BAD_INPUT", "EXIT_NOT_PROMOTED", "EXIT_PUBLISHED", "JobSpec", "JobState", "JobStatus", "Launcher"]


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
