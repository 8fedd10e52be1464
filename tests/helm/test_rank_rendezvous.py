"""The chart's rank wiring, run for real on 127.0.0.1: two processes of the rank pods'
command (``python -m trainer.cluster``) with the environment the chart gives them and the
arguments the launcher gives them meet through rank 0's Gloo rendezvous server — no ssh,
no horovodrun — train together and publish one version."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.loop.jobs.kubernetes import job_manifest
from gateway.loop.jobs.launcher import JobSpec
from model_repo.triton import free_port
from tests.trainer.conftest import env as trainer_env

from .conftest import ROOT, finetune_template

pytest.importorskip("horovod.tensorflow")

BUILD = """
import numpy as np, keras
from sklearn.datasets import load_digits
from converters import publish_keras_model
from converters.examples import digits_mlp
from model_repo import Repository
keras.utils.set_random_seed(0)
d = load_digits(); x = d.data.astype("float32"); y = d.target.astype("int64")
np.savez({data!r}, x=x, y=y)
m = digits_mlp(); m.compile("adam", "sparse_categorical_crossentropy"); m.fit(x[:200], y[:200], epochs=2, verbose=0)
publish_keras_model(m, Repository({repo!r}), "digits", sample={{"x": x[:16]}})
"""


def test_two_ranks_meet_through_rank_0s_rendezvous_and_publish(rendered, tmp_path):
    repo, data = tmp_path / "repo", tmp_path / "digits.npz"
    base_env = trainer_env()
    subprocess.run([sys.executable, "-c", BUILD.format(data=str(data), repo=str(repo))], check=True, cwd=ROOT,
                   env=base_env, timeout=300, capture_output=True)

    spec = JobSpec(job_id="wiring", model="digits", repo=str(repo), data=(str(data),), np=2,
                   options=("--epochs", "2"))
    job = job_manifest(finetune_template(rendered["default"]), spec, name="rel-tunegate-ft-wiring",
                       repo_mount=str(repo))
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    # What Kubernetes and DNS do in the cluster: the job-name label, the pod index, and
    # <job>-0.<service> resolving to rank 0's pod — here 127.0.0.1, with Gloo on loopback.
    job_name = job["metadata"]["name"]
    env["TUNEGATE_RENDEZVOUS_HOST"] = env["TUNEGATE_RENDEZVOUS_HOST"].replace("$(JOB_NAME)", job_name)
    assert env["TUNEGATE_RENDEZVOUS_HOST"] == f"{job_name}-0.rel-tunegate-finetune"
    env.update({"TUNEGATE_RENDEZVOUS_HOST": "127.0.0.1", "HOROVOD_GLOO_IFACE": "lo",
                "TUNEGATE_RENDEZVOUS_PORT": str(free_port()), "HOME": str(tmp_path)})
    env.pop("MPLCONFIGDIR")
    command = [sys.executable, *container["command"][1:], *container["args"]]
    assert container["command"][0] == "python"

    # Rank 1 first: it must wait for rank 0's server rather than fail.
    procs = [subprocess.Popen(command, env={**base_env, **env, "JOB_COMPLETION_INDEX": str(i)}, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in (1, 0)]
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[1][-3000:] + outputs[0][-3000:]

    result_file = Path(container["args"][container["args"].index("--result-file") + 1])
    assert result_file == repo / "digits" / ".finetune" / f"{job_name}.json"
    result = json.loads(result_file.read_text())
    assert result["status"] == "published" and result["version"] == 2
    summary = result["summary"]
    assert summary["world_size"] == 2
    assert len(set(summary["weights_checksums"])) == 1  # the replicas stayed identical
    assert (repo / "digits" / "2" / "model.onnx").is_file()
