"""The Kubernetes launcher: a fine-tune job is an Indexed Job made from the Helm chart's template.

The chart writes the fine-tune Job it would run itself to the ``<release>-tunegate-finetune``
ConfigMap (``job.yaml``) and mounts it into the gateway. :func:`job_manifest` copies it,
giving it this job's name, labels, rank count and rank arguments (``python -m
trainer.cluster`` + the job flags of :meth:`JobSpec.argv`), so a job started at run time has
exactly the chart's image, volumes, security context and rendezvous wiring. Rank 0 writes the
job's outcome to ``<repo>/<model>/.finetune/<job name>.json`` on the shared repository volume,
which the gateway mounts too: :class:`KubernetesLauncher` reads it there and falls back on the
Job's conditions (:func:`job_state`) when a job ended without one.

The ``kubernetes`` client is imported only when a launcher talks to a cluster (the gateway
runs without it), and its blocking calls run in worker threads, off the event loop.
:func:`job_manifest` and :func:`job_state` need neither and are shared with ``tunegate
finetune --submit`` (``trainer/submit.py``).
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from pathlib import Path
from typing import Any

from ..errors import GatewayError
from .launcher import JobSpec, JobState, JobStatus, Launcher

__all__ = ["ClusterError", "KubernetesLauncher", "job_manifest", "job_name", "job_state", "load_template",
           "rank_args", "LAUNCH_ONLY_FLAGS"]

LABEL_JOB_ID = "tunegate.io/job-id"
LABEL_MODEL = "tunegate.io/model"
ANNOTATION_JOB_ID = "tunegate.io/job-id"  # the id as given (labels allow fewer characters)
RESULT_DIR = ".finetune"  # beside the model's versions; Triton and the gateway ignore dot entries
TRAINER_CONTAINER = "trainer"
# Pods are named <job>-<index>-<suffix> and their hostname is <job>-<index>, a DNS label:
# leave room for the index.
MAX_JOB_NAME = 56

# `tunegate finetune` flags that place ranks (horovodrun's business); in a Job the pods do.
LAUNCH_ONLY_FLAGS = frozenset({"--np", "--hosts", "--min-np", "--max-np", "--host-discovery-script", "--json"})


class ClusterError(GatewayError):
    """The cluster refused or could not be reached."""

    status = 503
    exit_code = 1  # `tunegate finetune --submit`


def load_template(path: str | Path) -> dict[str, Any]:
    """The chart's fine-tune Job (``job.yaml`` of the finetune ConfigMap)."""
    import yaml  # a dependency of the kubernetes client, which a cluster launcher has

    try:
        template = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ClusterError(f"cannot read the fine-tune Job template {path}: {exc}") from None
    if not isinstance(template, dict) or template.get("kind") != "Job":
        raise ClusterError(f"{path} is not a Job manifest (the chart's finetune ConfigMap, job.yaml)")
    return template


def job_name(prefix: str, job_id: str) -> str:
    """A DNS-1123 label from ``prefix`` and ``job_id``, at most :data:`MAX_JOB_NAME` long."""
    slug = re.sub(r"[^a-z0-9-]+", "-", job_id.lower()).strip("-") or "job"
    prefix = re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).strip("-")
    name = f"{prefix}-{slug}" if prefix else slug
    if len(name) > MAX_JOB_NAME:
        name = f"{prefix[:MAX_JOB_NAME - len(slug[-24:]) - 1].rstrip('-')}-{slug[-24:]}".strip("-")
    return name[:MAX_JOB_NAME].strip("-")


def _label_value(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:63].strip("-_.")


def result_path(repo: str | Path, model: str, name: str) -> Path:
    return Path(repo) / model / RESULT_DIR / f"{name}.json"


def rank_args(spec: JobSpec, *, repo: str, result_file: str) -> list[str]:
    """The job flags every rank gets: :meth:`JobSpec.argv` minus the program, the subcommand
    and the flags that only place ranks (``--json`` alone, the others with a value)."""
    argv = spec.argv(repo=repo, program=())[1:]  # drop "finetune"
    out: list[str] = []
    i = 0
    while i < len(argv):
        flag = argv[i].split("=", 1)[0]
        if flag in LAUNCH_ONLY_FLAGS:
            takes_value = flag != "--json" and "=" not in argv[i]
            i += 2 if takes_value else 1
            continue
        out.append(argv[i])
        i += 1
    return out + ["--result-file", result_file]


def job_manifest(template: dict[str, Any], spec: JobSpec, *, name: str, ranks: int | None = None,
                 repo_mount: str | None = None) -> dict[str, Any]:
    """The Job that runs ``spec`` on ``ranks`` pods (default: ``spec.np``, else the template's).

    ``repo_mount`` is where the pods see the repository (default: the template's mount of
    the ``models`` volume)."""
    job = copy.deepcopy(template)
    job.pop("status", None)
    pod = job["spec"]["template"]["spec"]
    container = next((c for c in pod["containers"] if c["name"] == TRAINER_CONTAINER), None)
    if container is None:
        raise ClusterError(f"the fine-tune Job template has no {TRAINER_CONTAINER!r} container")
    if repo_mount is None:
        repo_mount = next((m["mountPath"] for m in container.get("volumeMounts", []) if m["name"] == "models"),
                          spec.repo)
    n = ranks or spec.np or int(job["spec"].get("completions") or 1)
    if n < 1:
        raise ClusterError(f"a fine-tune job needs at least one rank, got {n}")

    meta = job.setdefault("metadata", {})
    meta["name"] = name
    meta.pop("namespace", None)
    labels = meta.setdefault("labels", {})
    labels.update({"app.kubernetes.io/managed-by": "tunegate", LABEL_JOB_ID: _label_value(spec.job_id),
                   LABEL_MODEL: _label_value(spec.model)})
    meta.setdefault("annotations", {})[ANNOTATION_JOB_ID] = spec.job_id
    job["spec"]["completions"] = job["spec"]["parallelism"] = n
    pod_labels = job["spec"]["template"].setdefault("metadata", {}).setdefault("labels", {})
    pod_labels[LABEL_JOB_ID] = labels[LABEL_JOB_ID]

    result_file = str(result_path(repo_mount, spec.model, name))
    container["args"] = rank_args(spec, repo=repo_mount, result_file=result_file)
    env = [e for e in container.get("env", []) if e["name"] != "TUNEGATE_WORLD_SIZE"]
    container["env"] = [{"name": "TUNEGATE_WORLD_SIZE", "value": str(n)}, *env]
    return job


_EXIT_CODE = re.compile(r"exit code (\d+)")


def job_state(job: dict[str, Any]) -> tuple[JobState, int | None, str]:
    """(state, exit code if known, message) from a Job object (its ``status`` as the API
    returns it, camelCase)."""
    status = job.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    for kind in ("Failed", "FailureTarget"):
        cond = conditions.get(kind)
        if cond is not None:
            message = cond.get("message") or cond.get("reason") or "the job failed"
            found = _EXIT_CODE.search(message)  # PodFailurePolicy names the rank's exit code
            code = int(found.group(1)) if found else None
            state = JobState.from_exit_code(code) if code is not None else JobState.FAILED
            return state, code, f"{cond.get('reason', kind)}: {message}"
    for kind in ("Complete", "SuccessCriteriaMet"):
        if kind in conditions:
            return JobState.SUCCEEDED, 0, "every rank finished"
    if "Suspended" in conditions:
        return JobState.PENDING, None, "suspended"
    if (status.get("ready") or 0) > 0:
        return JobState.RUNNING, None, f"{status['ready']} rank(s) running"
    return JobState.PENDING, None, "waiting for rank pods"


def _state_from_result(result: dict[str, Any]) -> tuple[JobState, int]:
    kind = result.get("status")
    if kind == "published":
        return JobState.SUCCEEDED, 0
    if kind == "not_promoted":
        return JobState.NOT_PROMOTED, 3
    return JobState.FAILED, 2 if result.get("error") in ("DataError", "ModelError") else 1


def _time(value: Any) -> str | None:
    return value.isoformat() if hasattr(value, "isoformat") else value


class KubernetesLauncher(Launcher):
    """Runs fine-tune jobs as Indexed Jobs in ``namespace``.

    ``repo`` is where this process sees the repository (the gateway's ``repo`` setting);
    ``repo_mount`` where the rank pods see it (default: the template's mount)."""

    def __init__(self, template: dict[str, Any], *, namespace: str, repo: str | Path,
                 repo_mount: str | None = None, name_prefix: str | None = None,
                 poll_interval: float = 5.0, api_client: Any = None) -> None:
        self.template = template
        self.namespace = namespace
        self.repo = Path(repo)
        self.repo_mount = repo_mount
        self.name_prefix = name_prefix or template.get("metadata", {}).get("name", "tunegate-ft")
        self.poll_interval = poll_interval
        self._api_client = api_client
        self._batch = None
        self._core = None
        self._cancelled: dict[str, JobStatus] = {}

    @classmethod
    def from_environment(cls, *, template_file: str | Path, repo: str | Path, namespace: str | None = None,
                         context: str | None = None, **kwargs: Any) -> KubernetesLauncher:
        """In a pod: the service account; elsewhere: ``~/.kube/config`` (``context``)."""
        return cls(load_template(template_file), namespace=namespace or current_namespace(),
                   repo=repo, api_client=connect(context), **kwargs)

    # -- the cluster, in worker threads
    def _apis(self):
        if self._batch is None:
            from kubernetes import client

            api = self._api_client or connect(None)
            self._batch, self._core = client.BatchV1Api(api), client.CoreV1Api(api)
        return self._batch, self._core

    async def _call(self, fn, *args, **kwargs):
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except ApiException as exc:
            if exc.status == 404:
                raise KeyError(kwargs.get("name", "job")) from None
            raise ClusterError(f"Kubernetes API: {exc.status} {exc.reason}: {_api_message(exc)}") from None
        except (HTTPError, OSError) as exc:  # refused, DNS, TLS, retries exhausted
            raise ClusterError(f"cannot reach the Kubernetes API: {exc}") from None

    def name_of(self, job_id: str) -> str:
        return job_name(self.name_prefix, job_id)

    async def start(self, spec: JobSpec) -> JobStatus:
        batch, _ = self._apis()
        name = self.name_of(spec.job_id)
        manifest = job_manifest(self.template, spec, name=name, repo_mount=self.repo_mount)
        try:
            created = await self._call(batch.create_namespaced_job, namespace=self.namespace, body=manifest)
        except ClusterError as exc:
            if "409" in exc.message:
                raise ClusterError(f"a fine-tune Job named {name} already exists (job id {spec.job_id!r})") from None
            raise
        self._cancelled.pop(spec.job_id, None)
        st = JobStatus(job_id=spec.job_id, model=spec.model, message=f"Job {self.namespace}/{name} created")
        st.created_at = _time(created.metadata.creation_timestamp) or st.created_at
        return st

    async def status(self, job_id: str) -> JobStatus:
        if job_id in self._cancelled:
            return self._cancelled[job_id]
        batch, core = self._apis()
        name = self.name_of(job_id)
        job = await self._call(batch.read_namespaced_job, name=name, namespace=self.namespace)
        data = job.to_dict()
        model = (job.metadata.labels or {}).get(LABEL_MODEL, "")
        state, code, message = job_state(_camel_status(data))
        st = JobStatus(job_id=job_id, model=model, state=state, exit_code=code, message=message,
                       created_at=_time(job.metadata.creation_timestamp),
                       started_at=_time(job.status.start_time), finished_at=_time(job.status.completion_time))
        if state.finished:
            result = await asyncio.to_thread(_read_json, result_path(self.repo, model, name))
            if result is not None:  # rank 0's own account beats the Job's summary
                st.result = result
                st.state, st.exit_code = _state_from_result(result)
                st.message = result.get("message", st.message)
            st.log_tail = await self._log_tail(core, name)
            if st.finished_at is None:
                st.finished_at = _time(next((c.last_transition_time for c in job.status.conditions or []
                                             if c.status == "True"), None))
        return st

    async def _log_tail(self, core, name: str, lines: int = 20) -> list[str]:
        """Rank 0's last lines (best effort: the pod may be gone)."""
        try:
            pods = await self._call(core.list_namespaced_pod, namespace=self.namespace,
                                    label_selector=f"job-name={name},batch.kubernetes.io/job-completion-index=0")
            if not pods.items:
                return []
            text = await self._call(core.read_namespaced_pod_log, name=pods.items[0].metadata.name,
                                    namespace=self.namespace, container=TRAINER_CONTAINER, tail_lines=lines)
        except (KeyError, ClusterError):
            return []
        return text.splitlines()

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
        batch, _ = self._apis()
        # Background: the pods go too; the trainer never publishes a partial version.
        await self._call(batch.delete_namespaced_job, name=self.name_of(job_id), namespace=self.namespace,
                         propagation_policy="Background")
        st.state, st.message = JobState.CANCELLED, "cancelled: the Job and its rank pods were deleted"
        self._cancelled[job_id] = st
        return st

    async def close(self) -> None:
        # Unlike a local horovodrun child, a Job outlives this gateway replica on purpose (the
        # HPA may remove the replica that started it); close only drops the API client.
        if self._api_client is not None:
            await asyncio.to_thread(self._api_client.close)
        self._batch = self._core = None


def connect(context: str | None):
    """An API client: the pod's service account in a cluster, else the kubeconfig."""
    try:
        from kubernetes import client, config
    except ImportError:
        raise ClusterError("the Kubernetes launcher needs the `kubernetes` package "
                           "(pip install 'tunegate[k8s]')") from None
    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config(context=context)
        except (config.ConfigException, OSError) as exc:
            raise ClusterError("no Kubernetes cluster is reachable: not running in a pod and no usable "
                               f"kubeconfig ({exc}); set KUBECONFIG or use --dry-run") from None
    return client.ApiClient()


def current_namespace(default: str = "default") -> str:
    path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    try:
        return path.read_text().strip() or default
    except OSError:
        return default


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _api_message(exc: Any) -> str:
    try:
        return json.loads(exc.body).get("message", exc.body)
    except (TypeError, ValueError, AttributeError):
        return str(exc.body)


def _camel_status(job: dict[str, Any]) -> dict[str, Any]:
    """The client's ``to_dict()`` is snake_case; :func:`job_state` reads the API's JSON."""
    status = job.get("status") or {}
    return {"status": {"ready": status.get("ready"), "active": status.get("active"),
                       "conditions": [{"type": c.get("type"), "status": c.get("status"),
                                       "reason": c.get("reason"), "message": c.get("message")}
                                      for c in status.get("conditions") or []]}}
