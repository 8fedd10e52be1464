"""The Kubernetes launcher without a cluster: the Job it would create (from the chart's own
template) is valid Kubernetes, Job status objects map to job states, and a cluster that
cannot be reached is reported, not hung on."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import kubernetes_validate
import pytest
import yaml

from gateway.loop.jobs.kubernetes import JobClusterError, KubernetesLauncher, job_manifest, job_name, job_state, rank_args
from gateway.loop.jobs.launcher import JobSpec, JobState

from .conftest import ROOT, finetune_template

SPEC = JobSpec(job_id="digits/7 retrain", model="digits", repo="/srv/gateway-view", data=("feedback:",), np=3,
               options=("--epochs", "4", "--json", "--hosts", "a:1,b:2", "--gate", "accuracy:+0.0"))


def test_the_job_it_creates_is_valid_and_runs_the_spec(rendered):
    template = finetune_template(rendered["default"])
    name = job_name("rel-tunegate-ft", SPEC.job_id)
    job = job_manifest(template, SPEC, name=name)
    for version in ("1.28.0", "1.37.0"):
        kubernetes_validate.validate(job, version, strict=True)
    assert job["metadata"]["name"] == name and len(name) <= 56
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 3
    (c,) = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["TUNEGATE_WORLD_SIZE"] == "3"
    # The pods' mount, not the gateway's path; placement flags dropped, job flags kept.
    assert c["args"] == ["--repo", "/models", "--model", "digits", "--data", "feedback:", "--epochs", "4",
                         "--gate", "accuracy:+0.0", "--result-file", f"/models/digits/.finetune/{name}.json"]
    assert job["metadata"]["annotations"]["tunegate.io/job-id"] == SPEC.job_id
    assert template["spec"]["completions"] == 2  # the template itself is untouched


def test_rank_args_drop_only_placement_flags():
    spec = JobSpec(job_id="x", model="m", repo="/r", version=4, options=("--np=2", "--elastic", "--min-np", "1"))
    assert rank_args(spec, repo="/p", result_file="/p/r.json") == [
        "--repo", "/p", "--model", "m", "--data", "feedback:", "--version", "4", "--elastic",
        "--result-file", "/p/r.json"]


@pytest.mark.parametrize("status, state, code", [
    ({}, JobState.PENDING, None),
    ({"active": 2, "ready": 0}, JobState.PENDING, None),
    ({"active": 2, "ready": 2}, JobState.RUNNING, None),
    ({"conditions": [{"type": "Complete", "status": "True"}]}, JobState.SUCCEEDED, 0),
    ({"conditions": [{"type": "SuccessCriteriaMet", "status": "True"}]}, JobState.SUCCEEDED, 0),
    ({"conditions": [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy",
                      "message": "Container trainer for pod ml/j-0-abc failed with exit code 3 matching "
                                 "FailJob rule at index 0"}]}, JobState.NOT_PROMOTED, 3),
    ({"conditions": [{"type": "FailureTarget", "status": "True", "reason": "PodFailurePolicy",
                      "message": "Container trainer for pod ml/j-1-x failed with exit code 2 matching "
                                 "FailJob rule at index 0"}]}, JobState.FAILED, 2),
    ({"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                      "message": "Job has reached the specified backoff limit"}]}, JobState.FAILED, None),
    ({"conditions": [{"type": "Failed", "status": "False"}], "ready": 1}, JobState.RUNNING, None),
    ({"conditions": [{"type": "Suspended", "status": "True"}]}, JobState.PENDING, None),
])
def test_job_status_maps_to_a_state(status, state, code):
    got, exit_code, message = job_state({"status": status})
    assert (got, exit_code) == (state, code)
    assert message


def test_an_unreachable_cluster_is_a_clear_error_and_the_loop_keeps_running(rendered, tmp_path):
    from kubernetes import client

    config = client.Configuration()
    config.host = "http://127.0.0.1:9"  # discard port: nothing listens
    config.retries = 0
    launcher = KubernetesLauncher(finetune_template(rendered["default"]), namespace="ml", repo=tmp_path,
                                  api_client=client.ApiClient(config))

    async def go():
        ticks = 0

        async def tick():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        ticker = asyncio.create_task(tick())
        with pytest.raises(JobClusterError, match="cannot reach the Kubernetes API"):
            await launcher.start(SPEC)
        ticker.cancel()
        await launcher.close()
        return ticks

    assert asyncio.run(go()) > 0  # the API call ran in a thread, not on the loop


def _tunegate(*args, env=None):
    return subprocess.run([sys.executable, str(ROOT / "tunegate_cli.py"), "finetune", *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=120)


def test_submit_dry_run_prints_the_launchers_job(rendered, tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(finetune_template(rendered["full-values"])))
    proc = _tunegate("--submit", "--dry-run", "--job-template", str(path), "--namespace", "ml", "--repo", "/models",
                     "--model", "digits", "--data", "feedback:", "--np", "2", "--epochs", "3", "--job-id", "nightly")
    assert proc.returncode == 0, proc.stderr
    job = yaml.safe_load(proc.stdout)
    kubernetes_validate.validate(job, "1.37.0", strict=True)
    assert job["metadata"]["namespace"] == "ml" and job["spec"]["completions"] == 2
    assert "--epochs" in job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "tensorflow" not in proc.stderr.lower()


def test_submit_without_a_cluster_says_so(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "missing")}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    proc = _tunegate("--submit", "--repo", "/models", "--model", "digits", "--data", "feedback:", env=env)
    assert proc.returncode == 1
    assert "no Kubernetes cluster is reachable" in proc.stderr and "Traceback" not in proc.stderr


def test_submit_to_a_cluster_that_is_down_says_so(tmp_path):
    from model_repo.triton import free_port

    kubeconfig = tmp_path / "config"  # a valid kubeconfig whose API server is not there
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "down",
        "clusters": [{"name": "down", "cluster": {"server": f"http://127.0.0.1:{free_port()}"}}],
        "users": [{"name": "me", "user": {"token": "t"}}],
        "contexts": [{"name": "down", "context": {"cluster": "down", "user": "me", "namespace": "ml"}}],
    }))
    env = {**os.environ, "HOME": str(tmp_path), "KUBECONFIG": str(kubeconfig)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    proc = _tunegate("--submit", "--repo", "/models", "--model", "digits", "--data", "feedback:", env=env)
    assert proc.returncode == 1, proc.stderr
    assert "cannot read ConfigMap ml/tunegate-finetune (is release 'tunegate' installed there?)" in proc.stderr
    assert "cannot reach the Kubernetes API" in proc.stderr and "Traceback" not in proc.stderr


def test_submit_loads_neither_tensorflow_nor_horovod_nor_aiohttp():
    code = ("import sys, trainer.submit, gateway.loop.jobs.kubernetes; "
            "print(sorted(m for m in ('tensorflow', 'horovod', 'aiohttp', 'kubernetes') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"


def test_kubernetes_loop_settings_build_a_kubernetes_launcher_without_a_cluster(rendered, tmp_path):
    from gateway.loop.wiring import make_launcher
    from gateway.settings import ConfigFileError, load_settings

    template = tmp_path / "job.yaml"
    template.write_text(yaml.safe_dump(finetune_template(rendered["default"])))
    settings = load_settings(repo=str(tmp_path), loop={"launcher": "kubernetes", "job_template": str(template),
                                                       "namespace": "ml"})
    launcher = make_launcher(settings)  # connects on the first job, not here
    assert isinstance(launcher, KubernetesLauncher) and launcher.namespace == "ml"
    assert launcher.template == finetune_template(rendered["default"]) and launcher.repo == tmp_path
    asyncio.run(launcher.close())
    with pytest.raises(ConfigFileError, match="needs loop.job_template"):
        load_settings(repo=str(tmp_path), loop={"launcher": "kubernetes"})
