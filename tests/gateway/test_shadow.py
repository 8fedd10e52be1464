"""Shadow evaluation and golden sets on a real gateway: a fine-tuned version is checked off
the request path before any user request reaches it; one that forgets the golden set, or
loses accuracy on held-back feedback, is rejected without ever being routed. Also: a
client that sends its id stays on one side of the canary split."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as triton

from model_repo import Repository

from . import loop_models
from .conftest import API_KEY, make_settings, serve, wait_for

KEY = {"X-API-Key": API_KEY}
WRONG = (1, 2, 0)  # a classifier that answers every class wrong


def _x(classes) -> np.ndarray:
    x = np.zeros((len(classes), 4), np.float32)
    x[np.arange(len(classes)), classes] = 1.0
    x[:, 3] = 0.5
    return x


def _infer(client, x, **kwargs) -> str:
    inp = triton.InferInput("X", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    return client.infer("clf", [inp], **kwargs).get_response()["model_version"]


def _canary(server) -> dict:
    return server.json("GET", "/v2/models/clf/canary", headers=KEY)[1]


@pytest.fixture()
def shadow_gateway(tmp_path):
    repo = Repository(tmp_path / "repo")
    loop_models.publish(repo, "clf", loop_models.classifier())
    classes = np.arange(60) % 3
    np.savez(repo.model_dir("clf") / "golden.npz", x=_x(classes), label=classes)
    settings = make_settings(repo.root, api_key=API_KEY, loop={
        # Canaries here are never decided on requests alone: the tests look at them on trial.
        "capture": True, "canary_fraction": 0.5, "canary_window_requests": 100_000, "canary_min_requests": 5,
        "min_labelled": 5, "max_p99_ratio": 1000.0, "p99_slack_ms": 60_000.0})
    with serve(settings) as server:
        yield server


def test_a_candidate_that_forgets_the_golden_set_never_serves(shadow_gateway):
    server, repo = shadow_gateway, shadow_gateway.repo
    client = server.client()
    for i in range(12):  # captured traffic for the replay
        _infer(client, _x([i % 3]), request_id=f"r{i}")
    version = loop_models.publish(repo, "clf", loop_models.classifier(perm=WRONG), fine_tuned=True)
    answered = set()
    for _ in range(200):
        answered.add(_infer(client, _x([0])))
        if repo.read_manifest("clf", version).status == "rejected":
            break
    manifest = repo.read_manifest("clf", version)
    assert manifest.status == "rejected" and answered == {"1"}  # no user request reached it
    report = manifest.extra["shadow"]
    assert not report["passed"] and "accuracy on the golden set 0.00% vs 100.00%" in report["reason"]
    assert report["golden"]["examples"] == 60 and report["replay"]["disagreement"] == 1.0
    assert manifest.extra["canary"]["reason"].startswith("shadow evaluation: ")
    wait_for(lambda: client.get_model_metadata("clf")["versions"] == ["1"], what="candidate unloaded")


def test_a_candidate_that_passes_becomes_a_canary_and_clients_stick_to_a_side(shadow_gateway):
    server, repo = shadow_gateway, shadow_gateway.repo
    client = server.client()
    version = loop_models.publish(repo, "clf", loop_models.classifier(), fine_tuned=True)
    wait_for(lambda: _canary(server).get("canary", {}).get("state") == "canary", what="shadow passed")
    report = repo.read_manifest("clf", version).extra["shadow"]
    assert report["passed"] and report["golden"]["accuracy"] == 1.0 and report["golden"]["calibration_error"] >= 0
    # Sticky assignment: each client id sees one version throughout; both versions serve some.
    sides = {}
    for client_id in [f"client-{i}" for i in range(16)]:
        seen = {_infer(client, _x([1]), parameters={"client_id": client_id}) for _ in range(4)}
        assert len(seen) == 1, (client_id, seen)
        sides[client_id] = seen.pop()
    assert set(sides.values()) == {"1", str(version)}


def test_held_back_feedback_that_the_candidate_gets_wrong_stops_it(shadow_gateway):
    server, repo = shadow_gateway, shadow_gateway.repo
    classes = np.arange(6) % 3
    x = _x(classes)
    doc = {"inputs": [{"name": "X", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()},
                      {"name": "label", "datatype": "INT64", "shape": [6], "data": classes.tolist()}]}
    for _ in range(5):  # 30 labelled rows (the model batches up to 8 a request)
        assert server.json("POST", "/v2/models/clf/feedback", doc, KEY)[0] == 200
    (repo.model_dir("clf") / "golden.npz").unlink()  # only the held-back labels can tell
    version = loop_models.publish(repo, "clf", loop_models.classifier(perm=WRONG), fine_tuned=True)
    wait_for(lambda: repo.read_manifest("clf", version).status == "rejected", what="candidate rejected")
    report = repo.read_manifest("clf", version).extra["shadow"]
    assert "held-back labelled feedback 0.00% vs 100.00%" in report["reason"], report
    assert report["status"] == "failed" and report["held_back"]["status"] == "failed"
    assert report["golden"] == {"status": "insufficient", "examples": 0, "needed": 1}


def test_a_candidate_that_fails_on_real_inputs_is_stopped_before_a_client_sees_an_error(shadow_gateway):
    server, repo = shadow_gateway, shadow_gateway.repo
    client = server.client()
    for i in range(6):  # captured traffic: the replay is what exposes the fault
        _infer(client, _x([i % 3]), request_id=f"e{i}")
    version = loop_models.publish(repo, "clf", loop_models.classifier(fail_on_nonzero=True), fine_tuned=True)
    for _ in range(200):  # every answer meanwhile comes from version 1, without an error
        assert _infer(client, _x([1])) == "1"
        if repo.read_manifest("clf", version).status == "rejected":
            break
    report = repo.read_manifest("clf", version).extra["shadow"]
    assert not report["passed"] and report["reason"].startswith("evaluation failed: InferenceError"), report

