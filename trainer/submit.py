"""``tunegate finetune --submit``: run the fine-tune as a Kubernetes Job from a workstation.

The chapter's "build a job and spark-submit it", done the Kubernetes way: the Job is the
one the gateway's Kubernetes launcher would create (both build it with
``model_repo.kubernetes_job``, the trainer must not depend on the gateway), made from the
Helm release's fine-tune template (the ``<release>-tunegate-finetune`` ConfigMap, or
``--job-template`` with a file ``helm template`` wrote). ``--repo`` is where the rank
pods mount the repository (the chart's ``repository.mountPath``). ``--dry-run`` prints the
Job instead of creating it; with ``--job-template`` it needs no cluster at all.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import sys
import time

from model_repo.jobs import EXIT_FAILED, EXIT_OK, JobSpec, JobState, JobStatus
from model_repo.kubernetes_job import JobClusterError, KubernetesJobs, connect, current_namespace, job_manifest, \
    job_name, load_template, name_prefix

from .options import to_argv

POLL_SECONDS = 5.0  # --wait: a Job's conditions change on the scale of pod starts, not faster

# The JobSpec fields; every other job flag travels in JobSpec.options.
_SPEC_FIELDS = ("repo", "model", "data", "version")


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--submit", action="store_true",
                       help="run the job on Kubernetes as an Indexed Job (one pod per rank, --np ranks) "
                            "instead of horovodrun here; --repo is the pods' mount path")
    group.add_argument("--dry-run", action="store_true", help="with --submit: print the Job, create nothing")
    group.add_argument("--release", default="tunegate",
                       help="Helm release whose fine-tune template to use (default: tunegate)")
    group.add_argument("--namespace", help="default: the kubeconfig context's namespace, else 'default'")
    group.add_argument("--context", help="kubeconfig context (default: the current one)")
    group.add_argument("--job-template", metavar="FILE",
                       help="the fine-tune Job template as a file (job.yaml of the release's finetune "
                            "ConfigMap) instead of reading it from the cluster")
    group.add_argument("--job-id", help="default: <model>-<UTC timestamp>")
    group.add_argument("--wait", action="store_true", help="with --submit: wait until the Job finishes; "
                                                           "exit with its outcome")


def configmap_name(release: str) -> str:
    """The chart's fullname rule (``_helpers.tpl``) plus "-finetune"."""
    full = _trim_dash((release if "tunegate" in release else f"{release}-tunegate")[:63])
    return f"{_trim_dash(full[:54])}-finetune"


def _trim_dash(text: str) -> str:  # sprig's trimSuffix "-": one dash, not all
    return text[:-1] if text.endswith("-") else text


def job_spec(args: argparse.Namespace, job_id: str) -> JobSpec:
    rest = copy.copy(args)
    for name in _SPEC_FIELDS:
        setattr(rest, name, None)
    return JobSpec(job_id=job_id, model=args.model, repo=args.repo, data=tuple(args.data),
                   version=args.version, np=args.np, options=tuple(to_argv(rest)))


def _template(args: argparse.Namespace, jobs: KubernetesJobs | None):
    if args.job_template:
        return load_template(args.job_template)
    import yaml

    name = configmap_name(args.release)
    where = f"{jobs.namespace}/{name} (is release {args.release!r} installed there?)"
    try:
        text = jobs.read_config_map(name, "job.yaml")
    except KeyError:
        raise JobClusterError(f"no ConfigMap {where}") from None
    except JobClusterError as exc:  # refused, or the cluster cannot be reached
        raise JobClusterError(f"cannot read ConfigMap {where}: {exc}") from None
    return yaml.safe_load(text or "") or {}


def _connection(args: argparse.Namespace):
    """(api client or None, namespace). A dry run with a template file needs no cluster."""
    if args.dry_run and args.job_template:
        return None, args.namespace or "default"
    api = connect(args.context)
    namespace = args.namespace
    if namespace is None:
        from kubernetes import config

        try:
            _, active = config.list_kube_config_contexts()
            namespace = (active or {}).get("context", {}).get("namespace")
        except (config.ConfigException, OSError):
            namespace = None
        if namespace is None:
            namespace = current_namespace()
    return api, namespace


def submit(args: argparse.Namespace) -> int:
    import yaml

    job_id = args.job_id or f"{args.model}-{dt.datetime.now(dt.timezone.utc):%Y%m%d%H%M%S}"
    spec = job_spec(args, job_id)
    api, namespace = _connection(args)
    jobs = KubernetesJobs(api, namespace) if api is not None else None
    try:
        template = _template(args, jobs)
        name = job_name(name_prefix(template), job_id)
        manifest = job_manifest(template, spec, name=name, repo_mount=args.repo)
        if args.dry_run:
            manifest["metadata"]["namespace"] = namespace
            yaml.safe_dump(manifest, sys.stdout, sort_keys=False)
            return EXIT_OK
        jobs.create(manifest)
        print(f"created Job {namespace}/{name} ({manifest['spec']['completions']} ranks); "
              f"follow it with: kubectl logs -n {namespace} -f job/{name}", file=sys.stderr)
        st = JobStatus(job_id=job_id, model=spec.model, message=f"Job {namespace}/{name} created")
        if args.wait:
            st = _wait(jobs, name, args.repo, job_id)
    finally:
        if jobs is not None:
            jobs.close()
    if args.json:
        print(json.dumps({"job": name, "namespace": namespace, **st.to_dict()}, indent=2, default=str))
    if not args.wait:
        return EXIT_OK
    print(f"Job {namespace}/{name}: {st.state.value}: {st.message}", file=sys.stderr)
    return st.exit_code if st.exit_code is not None else (EXIT_OK if st.state == JobState.SUCCEEDED else EXIT_FAILED)


def _wait(jobs: KubernetesJobs, name: str, repo: str, job_id: str, interval: float = POLL_SECONDS) -> JobStatus:
    """Poll until the Job has finished. ``repo`` is the pods' mount: on a workstation the
    result file is usually not visible there, so the Job's conditions decide (as they do for
    the gateway when a job ended without one)."""
    while True:
        st = jobs.status(name, repo, job_id=job_id)
        if st.state.finished:
            return st
        time.sleep(interval)
