"""Instant rollback on a real gateway: after a promotion the replaced stable version stays
loaded for the rollback window, so rolling the promotion back switches the very next
request to it (nothing to load), and the rolled-back version is never routed again; after
the window the old version is unloaded and a rollback is refused with the reason."""

from __future__ import annotations

import time

import numpy as np
import tritonclient.http as triton

from model_repo import Repository

from . import loop_models
from .conftest import API_KEY, make_settings, serve, wait_for

KEY = {"X-API-Key": API_KEY}


def _version(client) -> str:
    x = np.array([[1, 0, 0, 0.5]], np.float32)
    inp = triton.InferInput("X", [1, 4], "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    return client.infer("clf", [inp]).get_response()["model_version"]


def _promote_v2(server) -> None:
    loop_models.publish(server.repo, "clf", loop_models.classifier(), fine_tuned=True)
    wait_for(lambda: server.json("GET", "/v2/models/clf/canary", headers=KEY)[1].get("canary", {}).get("state")
             == "canary", what="canary 2 live")
    status, body = server.json("POST", "/v2/models/clf/canary/promote", headers=KEY)
    assert status == 200 and body["state"] == "promoted", body


def test_a_promotion_rolled_back_within_the_window_is_a_switch(tmp_path):
    repo = Repository(tmp_path / "repo")
    loop_models.publish(repo, "clf", loop_models.classifier())
    with serve(make_settings(repo.root, api_key=API_KEY, loop={"rollback_window_seconds": 600})) as server:
        client = server.client()
        _promote_v2(server)
        wait_for(lambda: _version(client) == "2", what="version 2 serving")
        assert client.get_model_metadata("clf")["versions"] == ["1", "2"]  # 1 is warm, not routed
        assert {_version(client) for _ in range(20)} == {"2"}
        status, body = server.json("POST", "/v2/models/clf/canary/rollback", headers=KEY)
        assert status == 200 and body["state"] == "rolled_back" and body["stable_version"] == 1, body
        assert _version(client) == "1"  # the next request: the switch happened within the call
        assert repo.read_manifest("clf", 2).status == "rejected"
        assert {_version(client) for _ in range(20)} == {"1"}
        wait_for(lambda: client.get_model_metadata("clf")["versions"] == ["1"], what="version 2 unloaded")
        meta = server.json("GET", "/v2/models/clf/canary", headers=KEY)[1]
        assert meta["last_canary"]["reason"] == "promotion rolled back by hand"


def test_after_the_window_the_old_version_goes_and_a_rollback_says_why(tmp_path):
    repo = Repository(tmp_path / "repo")
    loop_models.publish(repo, "clf", loop_models.classifier())
    with serve(make_settings(repo.root, api_key=API_KEY, loop={"rollback_window_seconds": 1})) as server:
        client = server.client()
        _promote_v2(server)
        wait_for(lambda: client.get_model_metadata("clf")["versions"] == ["2"], what="version 1 unloaded")
        time.sleep(0.2)
        status, body = server.json("POST", "/v2/models/clf/canary/rollback", headers=KEY)
        assert status == 400 and "no longer loaded" in body["error"], body
        assert _version(client) == "2"


def test_every_answer_names_its_lineage_and_version_metadata_shows_it(tmp_path):
    repo = Repository(tmp_path / "repo")
    loop_models.publish(repo, "clf", loop_models.classifier())
    with serve(make_settings(repo.root, api_key=API_KEY)) as server:
        _promote_v2(server)
        manifest = repo.read_manifest("clf", 2)
        body = b'{"inputs":[{"name":"X","datatype":"FP32","shape":[1,4],"data":[1,0,0,0.5]}]}'
        status, headers, _ = server.request("POST", "/v2/models/clf/versions/2/infer", body,
                                            {"Content-Type": "application/json"})
        assert status == 200 and headers["Tunegate-Lineage-Id"] == f"clf:2:{manifest.sha256[:12]}"
        lineage = server.json("GET", "/v2/models/clf/versions/2")[1]["parameters"]["lineage"]
        assert lineage["id"] == headers["Tunegate-Lineage-Id"] and lineage["parent_version"] == 1
        wait_for(lambda: server.json("GET", "/v2/models/clf/versions/2")[1]["parameters"]["lineage"]
                 .get("canary", {}).get("state") == "promoted", what="the decision in the lineage")
        # No captures, held-back labels or golden set: no verdict, and a person promoted it.
        shadow = server.json("GET", "/v2/models/clf/versions/2")[1]["parameters"]["lineage"]["shadow"]
        assert shadow["status"] == "insufficient" and not shadow["passed"]
