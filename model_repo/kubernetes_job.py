"""A fine-tune job as a Kubernetes Indexed Job made from the Helm chart's template.

Shared by the gateway's Kubernetes launcher (``gateway/loop/jobs/kubernetes.py``, which runs
these blocking calls in worker threads) and ``tunegate finetune --submit``
(``trainer/submit.py``): it lives in ``model_repo`` because neither may import the other.

The chart writes the fine-tune Job it would run itself to the ``<release>-tunegate-finetune``
ConfigMap (``job.yaml``). :func:`job_manifest` copies it, giving it this job's name, labels,
rank count and rank arguments (``python -m trainer.cluster`` + the job flags of
:meth:`JobSpec.argv`), so a job started at run time has exactly the chart's image, volumes,
security context and rendezvous wiring. Rank 0 writes the job's outcome to
:func:`~model_repo.jobs.result_path` on the shared repository volume; :meth:`KubernetesJobs.status`
reads it there and falls back on the Job's conditions (:func:`job_state`) when a job ended
without one.

``yaml`` and ``kubernetes`` are imported inside the functions that need them: the rest of
the repository (and the gateway) runs without them.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

from .errors import RepositoryError
from .jobs import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_NOT_PROMOTED, EXIT_PUBLISHED, JobSpec, JobState, JobStatus, \
    result_path

__all__ = ["ANNOTATION_JOB_ID", "JobClusterError", "KubernetesJobs", "LABEL_JOB_ID", "LABEL_MODEL",
           "LAUNCH_ONLY_FLAGS", "connect", "current_namespace", "job_manifest", "job_name", "job_state",
           "load_template", "rank_args"]

LABEL_JOB_ID = "tunegate.io/job-id"
LABEL_MODEL = "tunegate.io/model"
ANNOTATION_JOB_ID = "tunegate.io/job-id"  # the id as given (labels allow fewer characters)
TRAINER_CONTAINER = "trainer"
# Pods are named <job>-<index>-<suffix> and their hostname is <job>-<index>, a DNS label:
# leave room for the index.
MAX_JOB_NAME = 56

# `tunegate finetune` flags that place ranks (horovodrun's business); in a Job the pods do.
LAUNCH_ONLY_FLAGS = frozenset({"--np", "--hosts", "--min-np", "--max-np", "--host-discovery-script", "--json"})


class JobClusterError(RepositoryError):
    """The cluster refused or could not be reached."""

    status = 503
    exit_code = EXIT_FAILED  # `tunegate finetune --submit`

    def __init__(self, message: str, api_status: int | None = None) -> None:
        super().__init__(message)
        self.api_status = api_status  # the API's HTTP status, when it answered


def load_template(path: str | Path) -> dict[str, Any]:
    """The chart's fine-tune Job (``job.yaml`` of the finetune ConfigMap)."""
    import yaml  # a dependency of the kubernetes client, which a cluster launcher has

    try:
        template = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise JobClusterError(f"cannot read the fine-tune Job template {path}: {exc}") from None
    if not isinstance(template, dict) or template.get("kind") != "Job":
        raise JobClusterError(f"{path} is not a Job manifest (the chart's finetune ConfigMap, job.yaml)")
    return template


def job_name(prefix: str, job_id: str) -> str:
    """A DNS-1123 label from ``prefix`` and ``job_id``, at most :data:`MAX_JOB_NAME` long."""
    slug = re.sub(r"[^a-z0-9-]+", "-", job_id.lower()).strip("-") or "job"
    prefix = re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).strip("-")
    name = f"{prefix}-{slug}" if prefix else slug
    if len(name) > MAX_JOB_NAME:
        name = f"{prefix[:MAX_JOB_NAME - len(slug[-24:]) - 1].rstrip('-')}-{slug[-24:]}".strip("-")
    return name[:MAX_JOB_NAME].strip("-")


def name_prefix(template: dict[str, Any]) -> str:
    """Jobs are named after the template's own name (the release's)."""
    return template.get("metadata", {}).get("name", "tunegate-ft")


def _label_value(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:63].strip("-_.")


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
        raise JobClusterError(f"the fine-tune Job template has no {TRAINER_CONTAINER!r} container")
    if repo_mount is None:
        repo_mount = next((m["mountPath"] for m in container.get("volumeMounts", []) if m["name"] == "models"),
                          spec.repo)
    n = ranks or spec.np or int(job["spec"].get("completions") or 1)
    if n < 1:
        raise JobClusterError(f"a fine-tune job needs at least one rank, got {n}")

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
            return JobState.SUCCEEDED, EXIT_PUBLISHED, "every rank finished"
    if "Suspended" in conditions:
        return JobState.PENDING, None, "suspended"
    if (status.get("ready") or 0) > 0:
        return JobState.RUNNING, None, f"{status['ready']} rank(s) running"
    return JobState.PENDING, None, "waiting for rank pods"


def _state_from_result(result: dict[str, Any]) -> tuple[JobState, int]:
    """Rank 0's result file (what ``tunegate finetune --json`` prints) as state and exit code."""
    kind = result.get("status")
    if kind == "published":
        return JobState.SUCCEEDED, EXIT_PUBLISHED
    if kind == "not_promoted":
        return JobState.NOT_PROMOTED, EXIT_NOT_PROMOTED
    return JobState.FAILED, EXIT_BAD_INPUT if result.get("error") in ("DataError", "ModelError") else EXIT_FAILED


def _time(value: Any) -> str | None:
    return value.isoformat() if hasattr(value, "isoformat") else value


class KubernetesJobs:
    """Fine-tune Jobs in ``namespace``, through an API client (see :func:`connect`).

    Every call blocks on the API; an async caller runs them in a thread. Errors: ``KeyError``
    for a Job that does not exist, :class:`JobClusterError` for anything the cluster refused
    or a cluster that cannot be reached (never the client's own exception types, so callers
    need not import ``kubernetes``)."""

    def __init__(self, api_client: Any, namespace: str) -> None:
        from kubernetes import client

        self.api_client = api_client
        self.namespace = namespace
        self._batch = client.BatchV1Api(api_client)
        self._core = client.CoreV1Api(api_client)

    def _call(self, fn, *args, **kwargs):
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            if exc.status == 404:
                raise KeyError(kwargs.get("name", "job")) from None
            raise JobClusterError(f"Kubernetes API: {exc.status} {exc.reason}: {_api_message(exc)}",
                                  api_status=exc.status) from None
        except (HTTPError, OSError) as exc:  # refused, DNS, TLS, retries exhausted
            raise JobClusterError(f"cannot reach the Kubernetes API: {exc}") from None

    def read_config_map(self, name: str, key: str) -> str | None:
        """One key of a ConfigMap in this namespace; ``KeyError`` if there is no such ConfigMap."""
        config_map = self._call(self._core.read_namespaced_config_map, name=name, namespace=self.namespace)
        return (config_map.data or {}).get(key)

    def create(self, manifest: dict[str, Any]) -> Any:
        """Create the Job; returns the API's Job object."""
        name = manifest["metadata"]["name"]
        try:
            return self._call(self._batch.create_namespaced_job, namespace=self.namespace, body=manifest)
        except JobClusterError as exc:
            if exc.api_status == 409:
                job_id = manifest["metadata"].get("annotations", {}).get(ANNOTATION_JOB_ID, name)
                raise JobClusterError(f"a fine-tune Job named {name} already exists (job id {job_id!r})") from None
            raise

    def read(self, name: str) -> Any:
        return self._call(self._batch.read_namespaced_job, name=name, namespace=self.namespace)

    def delete(self, name: str) -> None:
        # Background: the pods go too; the trainer never publishes a partial version.
        self._call(self._batch.delete_namespaced_job, name=name, namespace=self.namespace,
                   propagation_policy="Background")

    def log_tail(self, name: str, lines: int = 20) -> list[str]:
        """Rank 0's last lines (best effort: the pod may be gone)."""
        try:
            pods = self._call(self._core.list_namespaced_pod, namespace=self.namespace,
                              label_selector=f"job-name={name},batch.kubernetes.io/job-completion-index=0")
            if not pods.items:
                return []
            text = self._call(self._core.read_namespaced_pod_log, name=pods.items[0].metadata.name,
                              namespace=self.namespace, container=TRAINER_CONTAINER, tail_lines=lines)
        except (KeyError, JobClusterError):
            return []
        return text.splitlines()

    def status(self, name: str, repo: str | Path, *, job_id: str | None = None) -> JobStatus:
        """Job ``name``'s state; once finished, rank 0's result file (under ``repo``, where
        this process sees the repository) and log tail too."""
        job = self.read(name)
        meta = job.metadata
        model = (meta.labels or {}).get(LABEL_MODEL, "")
        job_id = job_id or (meta.annotations or {}).get(ANNOTATION_JOB_ID, name)
        state, code, message = job_state(_camel_status(job.to_dict()))
        st = JobStatus(job_id=job_id, model=model, state=state, exit_code=code, message=message,
                       created_at=_time(meta.creation_timestamp),
                       started_at=_time(job.status.start_time), finished_at=_time(job.status.completion_time))
        if state.finished:
            result = _read_json(result_path(repo, model, name))
            if result is not None:  # rank 0's own account beats the Job's summary
                st.result = result
                st.state, st.exit_code = _state_from_result(result)
                st.message = result.get("message", st.message)
            st.log_tail = self.log_tail(name)
            if st.finished_at is None:
                st.finished_at = _time(next((c.last_transition_time for c in job.status.conditions or []
                                             if c.status == "True"), None))
        return st

    def close(self) -> None:
        self.api_client.close()


def connect(context: str | None = None):
    """An API client: the pod's service account in a cluster, else the kubeconfig."""
    try:
        from kubernetes import client, config
    except ImportError:
        raise JobClusterError("the Kubernetes launcher needs the `kubernetes` package "
                              "(pip install 'tunegate[k8s]')") from None
    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config(context=context)
        except (config.ConfigException, OSError) as exc:
            raise JobClusterError("no Kubernetes cluster is reachable: not running in a pod and no usable "
                                  f"kubeconfig ({exc}); set KUBECONFIG or use --dry-run") from None
    return client.ApiClient()


def current_namespace(default: str = "default") -> str:
    """The pod's own namespace (its service account's), else ``default``."""
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
