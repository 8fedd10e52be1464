"""Every metric family a real gateway exports is named in docs/reference/metrics.md (a scrape
after an answer, a feedback and an error, with capture on), so a renamed metric fails here."""

from __future__ import annotations

import re

from model_repo import Repository
from tests.gateway import models
from tests.gateway.conftest import make_settings, serve

from .conftest import DOCS

ROW = {"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}


def test_every_exported_metric_is_documented(tmp_path):
    root = tmp_path / "repo"
    models.publish(Repository(root), "m", models.mlp_fp32(), models.mlp_config("m"))
    with serve(make_settings(root, loop={"capture": True})) as server:
        assert server.json("POST", "/v2/models/m/infer", {"inputs": [ROW]})[0] == 200
        label = {"name": "label", "datatype": "INT64", "shape": [1], "data": [1]}
        assert server.json("POST", "/v2/models/m/feedback", {"inputs": [ROW, label]})[0] == 200
        assert server.json("GET", "/v2/models/nosuch")[0] == 404
        status, _, body = server.request("GET", "/metrics")
    assert status == 200
    families = {re.sub(r"_(bucket|count|sum|created)$", "", line.split("{")[0].split()[0])
                for line in body.decode().splitlines() if line.startswith(("tunegate_", "nv_"))}
    families = {re.sub(r"_total$", "", name) for name in families}
    page = (DOCS / "reference" / "metrics.md").read_text()
    assert families and {"nv_inference_request_success", "tunegate_feedback_samples"} <= families
    missing = sorted(name for name in families if f"`{name}" not in page)
    assert not missing, f"exported but not in docs/reference/metrics.md: {missing}"
