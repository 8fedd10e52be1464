"""Fine-tune jobs that fail or are not promoted leave serving untouched and say why
(real `tunegate finetune` subprocesses through the gateway's local launcher)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.gateway.conftest import API_KEY, make_settings, serve, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "packaging"))

import loop_demo  # noqa: E402

KEY = {"X-API-Key": API_KEY}


@pytest.fixture(scope="module")
def digits_repo(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("jobs")
    repo, _ = loop_demo.build(workdir)
    return repo, workdir / "upright-replay.npz"


def _run_job(server) -> dict:
    status, started = server.json("POST", "/v2/models/digits/finetune", headers=KEY)
    assert status == 202, started
    job_id = started["job_id"]
    assert server.json("POST", "/v2/models/digits/finetune", headers=KEY)[0] == 409  # one at a time
    return wait_for(lambda: (lambda s, b: b if b.get("state") not in ("pending", "running") else None)(
        *server.json("GET", f"/v2/models/digits/finetune/{job_id}", headers=KEY)), what="job end", timeout=600)


@pytest.mark.parametrize("case", ["bad_input", "not_promoted"])
def test_job_that_fails_or_is_not_promoted_leaves_serving_untouched(digits_repo, tmp_path, case):
    repo, replay = digits_repo
    loop = {"np": 2, "jobs_dir": str(tmp_path / "jobs")}
    if case == "bad_input":
        loop["data"] = ["feedback:", str(tmp_path / "missing.npz")]
    else:  # trains for real, then the gate asks for the impossible
        loop.update(data=[str(replay)], options=["--epochs", "1", "--gate", "accuracy:+0.5"])
    with serve(make_settings(repo, api_key=API_KEY, loop=loop)) as server:
        versions = server.repo.list_versions("digits")
        job = _run_job(server)
        if case == "bad_input":
            assert job["state"] == "failed" and job["exit_code"] == 2
            assert "missing.npz" in job["message"]
        else:
            assert job["state"] == "not_promoted" and job["exit_code"] == 3
            assert "gate failed" in job["message"] and job["result"]["status"] == "not_promoted"
        assert job["log_tail"]
        assert (tmp_path / "jobs" / job["job_id"] / "job.log").stat().st_size > 0
        assert server.repo.list_versions("digits") == versions
        meta = server.client().get_model_metadata("digits")
        assert meta["versions"] == [str(versions[-1])] and "canary" not in meta["parameters"]
        assert meta["parameters"]["last_finetune_job"]["state"] == job["state"]
        assert server.json("GET", "/v2/models/digits/finetune/nope", headers=KEY)[0] == 404


def test_a_job_started_through_a_follower_is_started_once_by_the_leader(digits_repo, tmp_path):
    repo, _ = digits_repo
    loop = {"np": 1, "jobs_dir": str(tmp_path / "jobs"), "data": ["feedback:", str(tmp_path / "missing.npz")]}
    settings = [make_settings(repo, api_key=API_KEY, loop=loop) for _ in range(2)]
    with serve(settings[0]) as a, serve(settings[1]) as b:
        wait_for(lambda: a.json("GET", "/v2/loop/leader", headers=KEY)[1]["leader"]
                 or b.json("GET", "/v2/loop/leader", headers=KEY)[1]["leader"], what="a leader")
        leader, follower = (a, b) if a.json("GET", "/v2/loop/leader", headers=KEY)[1]["leader"] else (b, a)
        status, started = follower.json("POST", "/v2/models/digits/finetune", headers=KEY)
        assert status == 202 and started["trigger"] == "manual", started
        status, refused = leader.json("POST", "/v2/models/digits/finetune", headers=KEY)
        assert status == 409 and started["job_id"] in refused["error"], refused  # the same one job
        job = wait_for(lambda: (lambda s, j: j if j.get("state") not in ("pending", "running") else None)(
            *follower.json("GET", f"/v2/models/digits/finetune/{started['job_id']}", headers=KEY)), what="job end")
        assert job["state"] == "failed" and "missing.npz" in job["message"]
        assert [p.name for p in (tmp_path / "jobs").iterdir()] == [started["job_id"]]
