"""Two real ``tunegate serve`` processes over one repository (two replicas on a shared
volume, the local-lock leader backend), with a real fine-tune job (``tunegate finetune``,
np=1): one leader; feedback sent to both starts exactly one job; the leader killed mid-job
is replaced and its successor follows the same job instead of starting another; the canary
that job publishes is decided once, on the evidence of both processes, and both route alike."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from model_repo import Repository

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "packaging"))

import example_repo  # noqa: E402
import loop_demo  # noqa: E402

MODEL = loop_demo.MODEL


def _config(workdir: Path, replay: Path) -> Path:
    config = workdir / "gateway.json"
    config.write_text(json.dumps({
        "poll_interval_seconds": 0.2,
        "leader": {"poll_seconds": 0.2, "retry_seconds": 0.3},
        "runtime": {"provider": "cpu", "intra_op_threads": 1},
        "loop": {"jobs_dir": str(workdir / "jobs")},
        "loop_models": {MODEL: {
            "trigger": "samples", "trigger_samples": 40, "np": 1, "data": ["feedback:", str(replay)],
            "options": ["--epochs", "2", "--gate", "accuracy:-0.5"],
            "canary_fraction": 0.5, "canary_window_requests": 30, "canary_min_requests": 10,
            "rollback_window_seconds": 0,
            # Decided on the request window, which an insufficient shadow phase would forbid:
            # this test is about replicas, not evidence (tests/gateway/test_ledger_gateway.py).
            "shadow": False,
        }},
    }))
    return config


def _leader(gateway: loop_demo.Gateway) -> dict:
    status, body = gateway.json("GET", "/v2/loop/leader")
    assert status == 200, body
    return body


def _params(gateway: loop_demo.Gateway) -> dict:
    return gateway.json("GET", f"/v2/models/{MODEL}")[1].get("parameters", {})


def _infer(gateway: loop_demo.Gateway, x: np.ndarray) -> str:
    doc = {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
    status, body = gateway.json("POST", f"/v2/models/{MODEL}/infer", doc)
    assert status == 200, body
    return body["model_version"]


def test_two_replicas_one_leader_one_job_failover_and_one_canary_decision(tmp_path):
    repo, _ = loop_demo.build(tmp_path)
    config = _config(tmp_path, tmp_path / "upright-replay.npz")
    x, _, y, _ = example_repo.digits_split()
    a = loop_demo.Gateway(repo, config, tmp_path / "a.log")
    b = loop_demo.Gateway(repo, config, tmp_path / "b.log")
    gateways = [a, b]
    try:
        a.wait(lambda: _leader(a)["leader"] or _leader(b)["leader"], "a leader", 30)
        views = [_leader(a), _leader(b)]
        assert sorted(v["leader"] for v in views) == [False, True]
        assert views[0]["holder"] == views[1]["holder"]
        leader, follower = (a, b) if views[0]["leader"] else (b, a)

        # 25 samples through each: neither saw 40, the store holds 50: one job.
        loop_demo.send_feedback(a, x[:25], y[:25])
        loop_demo.send_feedback(b, x[25:50], y[25:50])
        job_id = follower.wait(lambda: _params(follower).get("finetune_job"), "the job", 60)
        assert _params(leader)["finetune_job"] == job_id
        # Killed once the job runs (its process record is written), not in the instant between
        # the leader recording the job and starting it.
        follower.wait(lambda: (tmp_path / "jobs" / job_id / "process.json").exists(), "the job's process", 60)

        # The leader dies mid-job; the follower takes over and follows the same job.
        leader.process.kill()
        leader.process.wait()
        killed = time.monotonic()
        follower.wait(lambda: _leader(follower)["leader"], "a new leader", 30)
        print(f"failover: {time.monotonic() - killed:.2f} s after the leader was killed")
        last = follower.wait(lambda: _params(follower).get("last_finetune_job"), "the job's end", 600)
        assert last["job_id"] == job_id and last["state"] == "succeeded", last
        assert [p.name for p in (tmp_path / "jobs").iterdir()] == [job_id]  # never a second job

        # A replica in the dead one's place; the canary runs on both and is decided once.
        c = loop_demo.Gateway(repo, config, tmp_path / "c.log")
        gateways.append(c)
        assert not _leader(c)["leader"]
        canary = follower.wait(lambda: _params(follower).get("canary", {}).get("version"), "the canary", 60)
        c.wait(lambda: _params(c).get("canary", {}).get("version") == canary, "the canary on the new replica", 60)
        seen = {follower: set(), c: set()}
        for i in range(400):
            if _params(follower).get("last_canary"):
                break
            for g in (follower, c):
                seen[g].add(_infer(g, x[i % len(x):i % len(x) + 1]))
        report = follower.wait(lambda: _params(follower).get("last_canary"), "the canary decision", 60)
        assert report["version"] == canary and report["state"] == "promoted", report
        assert report["processes"] == 2  # evidence of both replicas
        assert report["canary"]["requests"] + report["stable"]["requests"] > 30
        assert seen[follower] == seen[c] == {"1", str(canary)}  # both split traffic alike
        decided = Repository(repo).read_manifest(MODEL, canary).extra["canary"]
        assert decided["decided_by"] == _leader(follower)["identity"]
        c.wait(lambda: _params(c).get("last_canary", {}).get("version") == canary, "the decision seen by c", 30)
        for g in (follower, c):  # both serve the promoted version alone
            g.wait(lambda g=g: g.json("GET", f"/v2/models/{MODEL}")[1]["versions"] == [str(canary)],
                   "the stable version retired", 60)
        decisions = [g.request("GET", "/metrics")[2].decode().count(
            f'tunegate_canary_decisions{{model="{MODEL}",outcome="promoted"}} 1.0') for g in (follower, c)]
        assert sorted(decisions) == [0, 1]
    finally:
        for g in gateways:
            if g.process.poll() is None:
                g.stop()
