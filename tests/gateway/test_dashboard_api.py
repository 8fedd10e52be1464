"""The dashboard's routes without a browser: the lineage overview, the page's files, and
what needs no key."""

from __future__ import annotations

import json
import re

import pytest

from gateway.http import dashboard
from model_repo import Repository

from . import loop_models
from .conftest import API_KEY, make_settings, serve, wait_for

HISTORY = [{"epoch": 1, "loss": 0.9, "val_accuracy": 0.7, "note": "dropped: not a number"},
           {"epoch": 2, "loss": 0.5, "val_accuracy": 0.8, "flag": True}]


def _publish_trained(repo: Repository, **fields) -> int:
    """A version as the trainer leaves it: lineage fields and its summary's metrics.json."""
    with repo.staging("clf") as staged:
        (staged / "model.onnx").write_bytes(loop_models.classifier())
        (staged / "metrics.json").write_text(json.dumps({"history": HISTORY}))
        return repo.publish("clf", staged, parent_version=1, data_digest="ab" * 32,
                            metrics={"gate": {"passed": True, "message": "accuracy +0.10"}},
                            training={"world_size": 2, "mode": "allreduce"}, **fields).version


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("dashboard-api") / "repo"
    repo = Repository(root)
    loop_models.publish(repo, "clf", loop_models.classifier())
    _publish_trained(repo, canary={"version": 2, "stable_version": 1, "state": "promoted", "reason": "by hand"})
    loop_models.publish(repo, "clf", loop_models.classifier(), fine_tuned=True)  # 3: a pending canary
    (root / "broken").mkdir()
    (root / "broken" / "config.pbtxt").write_text("this is not a model config {")
    settings = make_settings(root, api_key=API_KEY, loop={"canary_window_requests": 100_000,
                                                          "canary_min_requests": 100_000})
    with serve(settings, wait_ready=False) as gateway:
        wait_for(lambda: gateway.request("GET", "/v2/models/clf/ready")[0] == 200, what="clf ready")
        yield gateway


def test_overview_gives_each_versions_lineage_and_the_plan_without_a_key(server):
    status, body = server.json("GET", "/dashboard/api/models")
    assert status == 200, body
    assert body["api_key_required"] is True and body["api_key_header"] == "X-API-Key"
    models = {m["name"]: m for m in body["models"]}
    assert "error" in models["broken"] and models["broken"]["versions"] == []  # one bad model, one row
    clf = models["clf"]
    assert (clf["stable"], clf["canary"], clf["serving"]) == (2, 3, [2, 3])
    v1, v2, v3 = clf["versions"]
    assert v1["parent_version"] is None and v1["history"] is None
    assert v2["parent_version"] == 1 and v2["data_digest"] == "ab" * 32
    assert v2["metrics"]["gate"]["passed"] is True and v2["extra"]["canary"]["state"] == "promoted"
    # Only the numbers of each epoch: the page plots them.
    assert v2["history"] == [{"epoch": 1, "loss": 0.9, "val_accuracy": 0.7}, {"epoch": 2, "loss": 0.5, "val_accuracy": 0.8}]
    assert v3["parent_version"] == 2 and v3["extra"]["training"]["world_size"] == 2


def test_page_and_its_files_are_served_alone_with_a_strict_policy(server):
    status, headers, page = server.request("GET", "/dashboard")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    html = page.decode()
    assert "<script>" not in html and "style=" not in html  # nothing inline: the policy would refuse it
    referenced = re.findall(r'(?:src|href)="/dashboard/static/([^"]+)"', html)
    assert sorted(referenced) == ["app.js", "cells.js", "charts.js", "style.css"]
    assert not re.search(r'(?:src|href)="(?:https?:)?//', html)  # no CDN
    for name in referenced:
        status, headers, body = server.request("GET", f"/dashboard/static/{name}")
        assert status == 200 and body == (dashboard.STATIC / name).read_bytes()
        assert headers["X-Content-Type-Options"] == "nosniff"
    assert server.request("GET", "/dashboard/")[0] == 200


@pytest.mark.parametrize("name", ["index.htm", "..%2Fdashboard.py", "%2E%2E%2F%2E%2E%2Fapp.py"])
def test_only_the_pages_own_files_are_served(server, name):
    status, _, body = server.request("GET", f"/dashboard/static/{name}")
    assert status == 404, body
    assert "error" in json.loads(body)
