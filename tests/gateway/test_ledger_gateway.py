"""The loop's ledger on real gateways: feedback rows numbered across serving processes, and
a candidate without evidence never promoted on the request window alone."""

from __future__ import annotations

import threading

import numpy as np
import tritonclient.http as triton

from model_repo import Repository
from model_repo.feedback import feedback_dir, list_shards, read_feedback

from . import loop_models
from .conftest import API_KEY, make_settings, serve, wait_for

KEY = {"X-API-Key": API_KEY}


def _feedback(marker: int) -> dict:
    x = np.full((2, 4), marker, np.float32)
    return {"inputs": [{"name": "X", "datatype": "FP32", "shape": [2, 4], "data": x.ravel().tolist()},
                       {"name": "label", "datatype": "INT64", "shape": [2], "data": [marker % 3, marker % 3]}]}


def test_rows_from_two_serving_processes_get_distinct_increasing_numbers(tmp_path):
    repo = Repository(tmp_path / "repo")
    loop_models.publish(repo, "clf", loop_models.classifier())
    with serve(make_settings(repo.root, api_key=API_KEY)) as a, serve(make_settings(repo.root, api_key=API_KEY)) as b:
        def post(server, start: int) -> None:
            for marker in range(start, start + 40):
                assert server.json("POST", "/v2/models/clf/feedback", _feedback(marker), KEY)[0] == 200

        threads = [threading.Thread(target=post, args=(a, 0)), threading.Thread(target=post, args=(b, 1000))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    stored = read_feedback(feedback_dir(repo.root, "clf"))
    assert stored.sequences.tolist() == list(range(1, 161))  # distinct, increasing, none lost
    for start in (0, 1000):  # each process's rows in the order it stored them
        mine = stored.sequences[(stored.inputs["X"][:, 0] >= start) & (stored.inputs["X"][:, 0] < start + 40)]
        assert len(mine) == 80 and np.all(np.diff(mine) > 0)
    later = read_feedback(feedback_dir(repo.root, "clf"), after=150)
    assert later.sequences.tolist() == list(range(151, 161)) and later.shards_read == [list_shards(
        feedback_dir(repo.root, "clf"))[-1].name]


def _infer(client) -> str:
    x = np.zeros((1, 4), np.float32)
    inp = triton.InferInput("X", [1, 4], "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    return client.infer("clf", [inp]).get_response()["model_version"]


def test_a_candidate_without_evidence_is_not_promoted_on_requests_alone(tmp_path):
    repo = Repository(tmp_path / "repo")
    loop_models.publish(repo, "clf", loop_models.classifier())
    loop = {"canary_fraction": 0.5, "canary_wait_for_labels": False, "canary_window_requests": 10,
            "canary_min_requests": 5, "canary_window_seconds": None, "max_p99_ratio": 1000.0,
            "p99_slack_ms": 60_000.0}
    with serve(make_settings(repo.root, api_key=API_KEY, loop=loop)) as server:
        client = server.client()
        version = loop_models.publish(repo, "clf", loop_models.classifier(), fine_tuned=True)
        canary = lambda: server.json("GET", "/v2/models/clf/canary", headers=KEY)[1].get("canary", {})  # noqa: E731
        wait_for(lambda: canary().get("state") == "canary", what="the candidate on trial")
        assert canary()["shadow"] == "insufficient"
        report = repo.read_manifest("clf", version).extra["shadow"]
        assert report["status"] == "insufficient" and not report["passed"]
        assert {report[k]["status"] for k in ("replay", "held_back", "golden")} == {"insufficient"}
        # Three times the request window: a canary with evidence would have been promoted.
        answered = {_infer(client) for _ in range(60)}
        wait_for(lambda: canary().get("canary", {}).get("requests", 0) >= 20, what="the canary's requests counted")
        assert str(version) in answered and canary()["state"] == "canary"
        assert "canary" not in repo.read_manifest("clf", version).extra  # undecided
        # A person decides.
        status, body = server.json("POST", "/v2/models/clf/canary/promote", headers=KEY)
        assert status == 200 and body["state"] == "promoted"


def test_without_evidence_the_time_cap_rolls_the_candidate_back(tmp_path):
    repo = Repository(tmp_path / "repo")
    loop_models.publish(repo, "clf", loop_models.classifier())
    loop = {"canary_fraction": 0.5, "canary_min_requests": 1, "canary_window_seconds": 0.5,
            "max_p99_ratio": 1000.0, "p99_slack_ms": 60_000.0}
    with serve(make_settings(repo.root, api_key=API_KEY, loop=loop)) as server:
        client = server.client()
        version = loop_models.publish(repo, "clf", loop_models.classifier(), fine_tuned=True)
        wait_for(lambda: server.json("GET", "/v2/models/clf/canary", headers=KEY)[1].get("canary", {})
                 .get("state") == "canary", what="the candidate on trial")
        wait_for(lambda: _infer(client) and repo.read_manifest("clf", version).status == "rejected",
                 what="the time cap's decision")
        reason = repo.read_manifest("clf", version).extra["canary"]["reason"]
        assert "no evidence it is as good" in reason


def test_a_stopping_gateway_with_a_trigger_due_starts_nothing_and_exits(tmp_path):
    import json
    import os
    import re
    import signal
    import subprocess
    import sys
    import urllib.request

    from model_repo.feedback import FeedbackWriter

    repo = Repository(tmp_path / "repo")
    loop_models.publish(repo, "clf", loop_models.classifier())
    loop_models.publish(repo, "clf", loop_models.classifier(), fine_tuned=True)  # on trial: no job may start
    with FeedbackWriter(feedback_dir(repo.root, "clf")) as writer:
        writer.append({"X": np.zeros((10, 4), np.float32)}, np.zeros(10, np.int64))
    config = tmp_path / "gateway.json"
    config.write_text(json.dumps({"exit_timeout_seconds": 10, "leader": {"poll_seconds": 0.1},
                                  "loop_models": {"clf": {"trigger": "samples", "trigger_samples": 5,
                                                          "canary_window_requests": 100_000}}}))
    environ = {k: v for k, v in os.environ.items() if not k.upper().startswith("TUNEGATE_")}
    server = subprocess.Popen([sys.executable, "-m", "tunegate_cli", "serve", "--repo", str(repo.root), "--port", "0",
                               "--grpc-port", "0", "--provider", "cpu", "--config", str(config)],
                              stderr=subprocess.PIPE, text=True, env=environ)
    try:
        for line in server.stderr:
            if match := re.search(r"serving .* on http://127\.0\.0\.1:(\d+) ", line):
                break
        url = f"http://127.0.0.1:{match.group(1)}/v2/models/clf"

        def params() -> dict:
            try:
                return json.loads(urllib.request.urlopen(url, timeout=10).read())["parameters"]
            except OSError:  # 503 while it loads
                return {}
        wait_for(lambda: params().get("feedback_samples_since_job") == 10 and params().get("canary"),
                 what="a trigger due while a candidate is on trial")
        server.send_signal(signal.SIGTERM)
        rest = server.stderr.read()  # to the end: the process has exited
        assert server.wait(timeout=60) == 0, rest
    finally:
        server.kill()
        server.wait()
        server.stderr.close()
    assert "fine-tune job" not in rest and "could not start" not in rest, rest


def test_pacing_waits_after_a_job_and_backs_off_after_jobs_that_did_not_help():
    from gateway.loop.jobs.value import pacing
    from gateway.loop.settings import LoopSettings

    settings = LoopSettings(trigger_min_interval_seconds=60, trigger_backoff_seconds=100,
                            trigger_backoff_max_seconds=350)
    now = 10_000.0
    assert pacing([], settings, now) is None
    assert "ended 30 s ago" in pacing([(now - 30, True)], settings, now)
    assert pacing([(now - 61, True), (now - 500, False)], settings, now) is None
    assert "100 s after 1" in pacing([(now - 61, False), (now - 500, True)], settings, now)
    assert "200 s after 2" in pacing([(now - 150, False), (now - 500, False), (now - 900, True)], settings, now)
    assert "350 s after 3" in pacing([(now - 300, False)] * 3, settings, now)  # capped
    assert pacing([(now - 351, False)] * 3, settings, now) is None


def test_a_job_starts_only_when_the_stable_version_is_worse_on_the_new_rows(tmp_path):
    repo = Repository(tmp_path / "repo")
    loop_models.publish(repo, "clf", loop_models.classifier())
    repo.update_manifest("clf", 1, metrics={"after": {"accuracy": 1.0}})  # as a fine-tune's gate leaves it
    loop = {"trigger": "samples", "trigger_samples": 10, "trigger_min_accuracy_drop": 0.1,
            "trigger_min_interval_seconds": 0,
            "jobs_dir": str(tmp_path / "jobs")}
    with serve(make_settings(repo.root, api_key=API_KEY, loop=loop)) as server:
        params = lambda: server.client().get_model_metadata("clf")["parameters"]  # noqa: E731

        def post(classes, labels) -> None:
            x = np.zeros((len(classes), 4), np.float32)
            x[np.arange(len(classes)), classes] = 1.0
            x[:, 3] = 0.5
            doc = {"inputs": [{"name": "X", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()},
                              {"name": "label", "datatype": "INT64", "shape": [len(labels)], "data": labels}]}
            assert server.json("POST", "/v2/models/clf/feedback", doc, KEY)[0] == 200

        for _ in range(2):
            post([0, 1, 2, 0, 1, 2], [0, 1, 2, 0, 1, 2])  # what version 1 answers already
        waiting = wait_for(lambda: params().get("finetune_waiting"), what="a due trigger that waits")
        assert "no evidence" in waiting and "100.0% accurate on 12 new rows" in waiting
        assert not (tmp_path / "jobs").exists() or not list((tmp_path / "jobs").iterdir())
        for _ in range(4):
            post([0, 1, 2, 0, 1, 2], [1, 2, 0, 1, 2, 0])  # the world changed: version 1 is wrong on these
        job = wait_for(lambda: params().get("last_finetune_job"), what="a job on evidence")
        assert job["state"] == "failed"  # it started (a test model has no Keras source to train)
        assert len(list((tmp_path / "jobs").iterdir())) == 1
