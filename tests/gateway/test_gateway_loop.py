"""Feedback, request capture and canaries on a real gateway (no trainer: versions that a
fine-tune job would publish are published here with the same manifest fields)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from model_repo.feedback import feedback_dir, read_feedback

from . import loop_models
from .conftest import API_KEY, make_settings, serve, wait_for

KEY = {"X-API-Key": API_KEY}


def _x(classes: list[int]) -> np.ndarray:
    """One row per class: a 1 where the class's score is, so a correct model answers it."""
    x = np.zeros((len(classes), 4), np.float32)
    x[np.arange(len(classes)), classes] = 1.0
    x[:, 3] = 0.5
    return x


def _infer(client, x, version: str = "", request_id: str = ""):
    inp = triton.InferInput("X", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    return client.infer("clf", [inp], model_version=version, request_id=request_id)


def _feedback_doc(x: np.ndarray, labels: np.ndarray) -> dict:
    return {"inputs": [{"name": "X", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()},
                       {"name": "label", "datatype": "INT64", "shape": [len(labels)], "data": labels.tolist()}]}


@pytest.fixture()
def loop_gateway(tmp_path):
    repo_root = tmp_path / "repo"
    from model_repo import Repository

    repo = Repository(repo_root)
    loop_models.publish(repo, "clf", loop_models.classifier())
    settings = make_settings(repo_root, api_key=API_KEY, loop={
        "capture": True, "canary_fraction": 0.5, "canary_window_requests": 30, "canary_min_requests": 10,
        "min_labelled": 5, "rollback_window_seconds": 0,  # promotions retire the old stable at once
        # The canary itself is under test here (shadow evaluation, which would stop these
        # candidates earlier, has its own tests in test_shadow.py).
        "shadow": False,
        # These tests decide on errors and accuracy; a latency verdict over ~15 requests on a
        # loaded machine is chance (one stall is the p99). The latency rule is tested on its
        # own in test_canary_decision.py.
        "max_p99_ratio": 1000.0, "p99_slack_ms": 60_000.0})
    with serve(settings) as server:
        yield server


def test_feedback_json_binary_capture_and_metrics(loop_gateway):
    server = loop_gateway
    x = _x([0, 1, 2])
    labels = np.array([0, 1, 2], np.int64)
    status, body = server.json("POST", "/v2/models/clf/feedback", _feedback_doc(x, labels), KEY)
    assert status == 200, body
    assert body["samples"] == 3

    # Binary tensors, built by tritonclient itself.
    xi = triton.InferInput("X", [2, 4], "FP32")
    xi.set_data_from_numpy(_x([2, 2]) * 2, binary_data=True)
    li = triton.InferInput("label", [2], "INT64")
    li.set_data_from_numpy(np.array([2, 2], np.int64), binary_data=True)
    raw, json_size = triton.InferenceServerClient.generate_request_body([xi, li])
    status, _, answer = server.request("POST", "/v2/models/clf/feedback", raw,
                                       {**KEY, "Inference-Header-Content-Length": str(json_size)})
    assert status == 200, answer

    # Capture: the label alone, naming the request by the id the client gave.
    client = server.client()
    _infer(client, _x([1]), request_id="req-1")
    doc = {"parameters": {"request_id": "req-1"},
           "inputs": [{"name": "label", "datatype": "INT64", "shape": [1], "data": [1]}]}
    status, body = server.json("POST", "/v2/models/clf/feedback", doc, KEY)
    assert status == 200, body
    assert body["answered_by_version"] == "1"
    # ...and by the X-Request-ID the gateway generated for a request without an id.
    status, headers, _ = server.request("POST", "/v2/models/clf/infer", json.dumps(
        {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": _x([0]).ravel().tolist()}]}).encode(),
        {"Content-Type": "application/json"})
    assert status == 200
    doc["parameters"]["request_id"] = headers["X-Request-ID"]
    doc["inputs"][0]["data"] = [0]
    assert server.json("POST", "/v2/models/clf/feedback", doc, KEY)[0] == 200
    # A request is labelled once (409); an unknown id is the client's error.
    status, body = server.json("POST", "/v2/models/clf/feedback", doc, KEY)
    assert status == 409 and "already labelled" in body["error"]
    doc["parameters"]["request_id"] = "never-sent"
    status, body = server.json("POST", "/v2/models/clf/feedback", doc, KEY)
    assert status == 400 and "no captured request" in body["error"]

    stored = read_feedback(feedback_dir(server.repo.root, "clf"))
    assert stored.labels.tolist() == [0, 1, 2, 2, 2, 1, 0]
    np.testing.assert_array_equal(stored.inputs["X"], np.concatenate([x, _x([2, 2]) * 2, _x([1]), _x([0])]))

    metrics = server.request("GET", "/metrics")[2].decode()
    assert 'tunegate_feedback_samples{model="clf"} 7.0' in metrics
    assert 'tunegate_feedback_requests{model="clf"} 4.0' in metrics
    assert 'tunegate_feedback_labelled_answers{model="clf"} 2.0' in metrics


@pytest.mark.parametrize("doc,headers,status,message", [
    ({"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [0, 0, 0, 0]}]}, KEY, 400,
     "named 'label'"),
    ({"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 3], "data": [0, 0, 0]},
                 {"name": "label", "datatype": "INT64", "shape": [1], "data": [1]}]}, KEY, 400, "shape"),
    ({"inputs": [{"name": "X", "datatype": "FP32", "shape": [2, 4], "data": [0] * 8},
                 {"name": "label", "datatype": "INT64", "shape": [1], "data": [1]}]}, KEY, 400, "rows"),
    ({"inputs": [{"name": "Y", "datatype": "FP32", "shape": [1, 4], "data": [0] * 4},
                 {"name": "label", "datatype": "INT64", "shape": [1], "data": [1]}]}, KEY, 400, "unexpected input"),
    ({"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [0] * 4},
                 {"name": "label", "datatype": "INT64", "shape": [1], "data": [1]}]}, {}, 401, "API key"),
])
def test_feedback_is_validated_and_nothing_bad_is_stored(loop_gateway, doc, headers, status, message):
    got, body = loop_gateway.json("POST", "/v2/models/clf/feedback", doc, headers)
    assert got == status and message in body["error"]
    assert len(read_feedback(feedback_dir(loop_gateway.repo.root, "clf"))) == 0
    assert loop_gateway.json("POST", "/v2/models/nope/feedback", doc, KEY)[0] == 404


def _canary(server) -> dict:
    return server.json("GET", "/v2/models/clf/canary", headers=KEY)[1]


def test_canary_promoted_then_a_worse_one_rolled_back_on_accuracy(loop_gateway):
    server, repo = loop_gateway, loop_gateway.repo
    client = server.client()
    loop_models.publish(repo, "clf", loop_models.classifier(), fine_tuned=True)  # v2: as good
    wait_for(lambda: _canary(server).get("canary", {}).get("version") == 2, what="canary 2 live")
    meta = client.get_model_metadata("clf")
    assert meta["parameters"]["canary"]["stable_version"] == 1 and meta["versions"] == ["1", "2"]

    seen = set()
    rng = np.random.default_rng(0)
    for i in range(400):
        if _canary(server).get("last_canary"):
            break
        classes = rng.integers(0, 3, size=2).tolist()
        result = _infer(client, _x(classes), request_id=f"a{i}")
        seen.add(result.get_response()["model_version"])
        try:
            pinned = _infer(client, _x(classes), version="1")
        except InferenceServerException:
            # the request above may have closed the window: promoted, version 1 is retired
            assert _canary(server).get("last_canary"), "version 1 went away while the canary was on trial"
            break
        assert pinned.get_response()["model_version"] == "1"  # pinned requests are honoured
        doc = {"parameters": {"request_id": f"a{i}"},
               "inputs": [{"name": "label", "datatype": "INT64", "shape": [2], "data": classes}]}
        assert server.json("POST", "/v2/models/clf/feedback", doc, KEY)[0] == 200
    last = _canary(server)["last_canary"]
    assert seen == {"1", "2"}
    assert last["state"] == "promoted", last
    assert last["canary"]["accuracy"] == 1.0 and last["stable"]["labelled"] >= 5
    wait_for(lambda: client.get_model_metadata("clf")["versions"] == ["2"], what="version 1 retired")
    assert repo.read_manifest("clf", 2).extra["canary"]["state"] == "promoted"

    # v3 answers the wrong class: its accuracy on labelled answers gives it away.
    loop_models.publish(repo, "clf", loop_models.classifier(perm=(1, 2, 0)), fine_tuned=True)
    wait_for(lambda: _canary(server).get("canary", {}).get("version") == 3, what="canary 3 live")
    for i in range(400):
        if _canary(server)["last_canary"]["version"] == 3:
            break
        classes = rng.integers(0, 3, size=2).tolist()
        _infer(client, _x(classes), request_id=f"b{i}")
        doc = {"parameters": {"request_id": f"b{i}"},
               "inputs": [{"name": "label", "datatype": "INT64", "shape": [2], "data": classes}]}
        assert server.json("POST", "/v2/models/clf/feedback", doc, KEY)[0] == 200
    last = _canary(server)["last_canary"]
    assert last["state"] == "rolled_back" and "accuracy" in last["reason"], last
    assert repo.read_manifest("clf", 3).status == "rejected"
    wait_for(lambda: client.get_model_metadata("clf")["versions"] == ["2"], what="version 3 unloaded")
    for _ in range(30):  # never routed again
        assert _infer(client, _x([0])).get_response()["model_version"] == "2"
    with pytest.raises(InferenceServerException):
        _infer(client, _x([0]), version="3")
    metrics = server.request("GET", "/metrics")[2].decode()
    assert 'tunegate_canary_decisions{model="clf",outcome="promoted"} 1.0' in metrics
    assert 'tunegate_canary_decisions{model="clf",outcome="rolled_back"} 1.0' in metrics


def test_canary_that_returns_errors_is_rolled_back(loop_gateway):
    server, repo = loop_gateway, loop_gateway.repo
    client = server.client()
    loop_models.publish(repo, "clf", loop_models.classifier(fail_on_nonzero=True), fine_tuned=True)
    wait_for(lambda: _canary(server).get("canary", {}).get("version") == 2, what="canary 2 live")
    failures = 0
    for _ in range(400):
        if _canary(server).get("last_canary"):
            break
        try:
            assert _infer(client, _x([1])).get_response()["model_version"] == "1"
        except InferenceServerException:
            failures += 1
    last = _canary(server)["last_canary"]
    assert failures > 0 and last["state"] == "rolled_back" and "error rate" in last["reason"], last
    assert repo.read_manifest("clf", 2).status == "rejected"
    wait_for(lambda: client.get_model_metadata("clf")["versions"] == ["1"], what="version 2 unloaded")
    for _ in range(30):
        assert _infer(client, _x([1])).get_response()["model_version"] == "1"


def test_manual_promote_and_rollback(loop_gateway):
    server, repo = loop_gateway, loop_gateway.repo
    loop_models.publish(repo, "clf", loop_models.classifier(), fine_tuned=True)
    wait_for(lambda: _canary(server).get("canary", {}).get("version") == 2, what="canary 2 live")
    assert server.json("POST", "/v2/models/clf/canary/rollback")[0] == 401
    status, body = server.json("POST", "/v2/models/clf/canary/rollback", headers=KEY)
    assert status == 200 and body["state"] == "rolled_back"
    assert repo.read_manifest("clf", 2).status == "rejected"
    assert server.json("POST", "/v2/models/clf/canary/promote", headers=KEY)[0] == 400  # none on trial
    loop_models.publish(repo, "clf", loop_models.classifier(), fine_tuned=True)
    wait_for(lambda: _canary(server).get("canary", {}).get("version") == 3, what="canary 3 live")
    status, body = server.json("POST", "/v2/models/clf/canary/promote", headers=KEY)
    assert status == 200 and body["state"] == "promoted"
    wait_for(lambda: server.client().get_model_metadata("clf")["versions"] == ["3"], what="version 3 alone")
