"""The leader's retention duty on a real gateway: over a repository a long-running loop left
(a dozen promoted versions, thirty finished job directories, decided canaries' evidence, a
dead process's drift counts and captures, answers nobody took), the gateway bounds them while
it keeps serving; the gauges appear in /metrics and the dashboard lists the removed versions
from the lineage log."""

from __future__ import annotations

import json
import os
import re
import time

from model_repo import PROMOTED, Repository
from model_repo.canary_state import decision_report
from model_repo.loop_gc import CAPTURE_DIR, DRIFT_DIR, JOBS_DIR, REQUESTS_DIR, disk_usage
from model_repo.retention import LOOP_DIR as REPO_LOOP_DIR

from gateway.loop.capture import CAPTURE_DIR as GATEWAY_CAPTURE_DIR
from gateway.loop.drift_files import DRIFT_DIR as GATEWAY_DRIFT_DIR
from gateway.loop.evidence import LOOP_DIR, evidence_dir

from . import loop_models
from .conftest import make_settings, serve, wait_for

ROW = {"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [0.0, 1.0, 0.0, 0.0]}


def test_model_repo_names_the_gateways_layout() -> None:
    # model_repo may not import the gateway: it repeats these names, so both must agree.
    assert (REPO_LOOP_DIR, CAPTURE_DIR, DRIFT_DIR) == (LOOP_DIR, GATEWAY_CAPTURE_DIR, GATEWAY_DRIFT_DIR)
    assert REQUESTS_DIR == "requests" and JOBS_DIR == ".jobs"


def _long_lived(repo: Repository) -> None:
    loop_models.publish(repo, "m", loop_models.classifier())
    for version in range(2, 13):
        loop_models.publish(repo, "m", loop_models.classifier((1, 2, 0)), fine_tuned=True)
        repo.update_manifest("m", version, canary=decision_report(version, version - 1, PROMOTED, "test"))
    old = time.time() - 7200
    for i in range(30):
        job = repo.root / JOBS_DIR / f"job-{i:03d}"
        job.mkdir(parents=True)
        (job / "spec.json").write_text(json.dumps({"model": "m", "argv": []}))
        (job / "job.log").write_text("epoch 1\n" * 100)
        (job / "status.json").write_text(json.dumps({"state": "not_promoted", "model": "m"}))
        os.utime(job, (old + i, old + i))
    for version in range(3, 12):
        directory = evidence_dir(repo.root, "m", version)
        directory.mkdir(parents=True)
        (directory / "gone-process.json").write_text("{}")
    stale = [repo.model_dir("m") / LOOP_DIR / DRIFT_DIR / "dead.json",
             repo.root / LOOP_DIR / REQUESTS_DIR / "untaken.answer.json",
             repo.model_dir("m") / CAPTURE_DIR / "dead-instance" / "seg-00000001.cap"]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"{}")
        os.utime(path, (old, old))
    os.utime(stale[-1].parent, (old, old))


def _metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_a_gateway_bounds_what_the_loop_left_and_reports_its_size(tmp_path) -> None:
    repo = Repository(tmp_path / "repo")
    _long_lived(repo)
    before = disk_usage(repo, "m")
    settings = make_settings(repo.root, loop={"keep_versions": 2, "keep_jobs": 3, "retention_interval_seconds": 0.5,
                                              "retention_stale_seconds": 600})
    with serve(settings) as server:
        assert server.json("POST", "/v2/models/m/infer", {"inputs": [ROW]})[0] == 200
        label = {"name": "label", "datatype": "INT64", "shape": [1], "data": [1]}
        assert server.json("POST", "/v2/models/m/feedback", {"inputs": [ROW, label]})[0] == 200
        # Stable 12, warm 11 (the rollback window), and the last 2 decided besides them.
        wait_for(lambda: repo.list_versions("m") == [9, 10, 11, 12], what="versions bounded")
        wait_for(lambda: len(list((repo.root / JOBS_DIR).iterdir())) == 3, what="job directories bounded")
        wait_for(lambda: not list((repo.model_dir("m") / LOOP_DIR).glob("canary-v*")), what="evidence removed")
        assert not (repo.root / LOOP_DIR / REQUESTS_DIR / "untaken.answer.json").exists()
        assert not (repo.model_dir("m") / LOOP_DIR / DRIFT_DIR / "dead.json").exists()
        assert not (repo.model_dir("m") / CAPTURE_DIR / "dead-instance").exists()
        # Still serving the stable version, and the removed ones are explained.
        status, answer = server.json("POST", "/v2/models/m/infer", {"inputs": [ROW]})
        assert status == 200 and answer["model_version"] == "12"

        def gauges() -> str | None:
            text = server.request("GET", "/metrics")[2].decode()
            return text if _metric(text, "tunegate_feedback_rows", model="m", kind="recent") == 1 else None

        text = wait_for(gauges, what="the feedback rows gauge")
        after = disk_usage(repo, "m")
        assert _metric(text, "tunegate_repository_bytes", model="m", part="versions") == after["versions"]["bytes"]
        for part in ("versions", "feedback", "capture", "jobs", "training", "evidence", "other"):
            assert _metric(text, "tunegate_repository_bytes", model="m", part=part) is not None
        assert _metric(text, "tunegate_retention_removed", model="m", kind="versions") == 8
        status, overview = server.json("GET", "/dashboard/api/models")
        shown = {v["version"]: v for v in overview["models"][0]["versions"]}
        assert status == 200 and shown[4]["removed"] and shown[4]["parent_version"] == 3
        assert shown[4]["extra"]["canary"]["state"] == PROMOTED and not shown.get(12, {}).get("removed")
    for part in ("versions", "jobs", "evidence"):
        assert after[part]["files"] < before[part]["files"], (part, before[part], after[part])
    print("before", {p: before[p] for p in before}, "\nafter ", {p: after[p] for p in after})
    assert re.search(r"^tunegate_repository_files\{", text, re.MULTILINE)
