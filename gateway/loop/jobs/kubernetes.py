"""The Kubernetes launcher: the :class:`Launcher` interface over ``model_repo.kubernetes_job``.

The Job itself (made from the chart's template), its status mapping and the blocking API
calls live in ``model_repo.kubernetes_job``, shared with ``tunegate finetune --submit``
(the trainer may not import the gateway). This adapter only runs those calls in worker
threads, off the event loop, and remembers the jobs it cancelled.

The ``kubernetes`` client is imported only when the launcher first talks to a cluster (the
gateway runs without it).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from model_repo.kubernetes_job import (  # noqa: F401 - re-exported for the gateway's callers
    LAUNCH_ONLY_FLAGS,
    JobClusterError,
    KubernetesJobs,
    connect,
    current_namespace,
    job_manifest,
    job_name,
    job_state,
    load_template,
    rank_args,
)
from model_repo.kubernetes_job import name_prefix as template_name_prefix

from .launcher import JobSpec, JobState, JobStatus, Launcher

__all__ = ["JobClusterError", "KubernetesLauncher", "LAUNCH_ONLY_FLAGS", "job_manifest", "job_name", "job_state",
           "load_template", "rank_args"]


class KubernetesLauncher(Launcher):
    """Runs fine-tune jobs as Indexed Jobs in ``namespace``.

    ``repo`` is where this process sees the repository (the gateway's ``repo`` setting);
    ``repo_mount`` where the rank pods see it (default: the template's mount). Without
    ``api_client`` it connects on first use (:func:`connect`), so building one needs no
    cluster."""

    def __init__(self, template: dict[str, Any], *, namespace: str, repo: str | Path,
                 repo_mount: str | None = None, name_prefix: str | None = None,
                 poll_interval: float = 5.0, api_client: Any = None, context: str | None = None) -> None:
        self.template = template
        self.namespace = namespace
        self.repo = Path(repo)
        self.repo_mount = repo_mount
        self.name_prefix = name_prefix or template_name_prefix(template)
        self.poll_interval = poll_interval
        self._api_client = api_client
        self._context = context
        self._jobs: KubernetesJobs | None = None
        self._cancelled: dict[str, JobStatus] = {}

    @classmethod
    def from_settings(cls, *, template_file: str | Path, repo: str | Path, namespace: str | None = None,
                      context: str | None = None, **kwargs: Any) -> KubernetesLauncher:
        """In a pod: the service account's cluster and namespace; elsewhere the kubeconfig's
        (``context``). Reads the template now (a bad path fails at start-up, not at the
        first job); connects lazily."""
        return cls(load_template(template_file), namespace=namespace or current_namespace(), repo=repo,
                   context=context, **kwargs)

    async def _cluster(self) -> KubernetesJobs:
        if self._jobs is None:
            api = self._api_client or await asyncio.to_thread(connect, self._context)
            self._api_client = api
            self._jobs = KubernetesJobs(api, self.namespace)
        return self._jobs

    def name_of(self, job_id: str) -> str:
        return job_name(self.name_prefix, job_id)

    async def start(self, spec: JobSpec) -> JobStatus:
        jobs = await self._cluster()
        name = self.name_of(spec.job_id)
        manifest = job_manifest(self.template, spec, name=name, repo_mount=self.repo_mount)
        created = await asyncio.to_thread(jobs.create, manifest)
        self._cancelled.pop(spec.job_id, None)
        st = JobStatus(job_id=spec.job_id, model=spec.model, message=f"Job {self.namespace}/{name} created")
        stamp = created.metadata.creation_timestamp
        st.created_at = stamp.isoformat() if stamp is not None else st.created_at
        return st

    async def status(self, job_id: str) -> JobStatus:
        if job_id in self._cancelled:
            return self._cancelled[job_id]
        jobs = await self._cluster()
        return await asyncio.to_thread(jobs.status, self.name_of(job_id), self.repo, job_id=job_id)

    async def wait(self, job_id: str) -> JobStatus:
        while True:
            st = await self.status(job_id)
            if st.state.finished:
                return st
            await asyncio.sleep(self.poll_interval)

    async def cancel(self, job_id: str) -> JobStatus:
        st = await self.status(job_id)
        if st.state.finished:
            return st
        jobs = await self._cluster()
        await asyncio.to_thread(jobs.delete, self.name_of(job_id))
        st.state, st.message = JobState.CANCELLED, "cancelled: the Job and its rank pods were deleted"
        self._cancelled[job_id] = st
        return st

    async def close(self) -> None:
        # Unlike a local horovodrun child, a Job outlives this gateway replica on purpose (the
        # HPA may remove the replica that started it); close only drops the API client.
        if self._api_client is not None:
            await asyncio.to_thread(self._api_client.close)
        self._api_client = self._jobs = None
