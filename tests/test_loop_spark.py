"""The gateway's loop with ``launcher = "spark"``: one job end to end, its ranks as tasks of a
real Spark local[2] (a real ``tunegate finetune --launcher spark`` subprocess, the driver)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gateway.loop.settings import LoopSettings
from tests.gateway.conftest import API_KEY, make_settings, serve, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "packaging"))

import loop_demo  # noqa: E402

KEY = {"X-API-Key": API_KEY}


def test_spark_launcher_needs_a_master():
    with pytest.raises(ValueError, match="spark_master"):
        LoopSettings(launcher="spark")


def test_loop_runs_a_job_on_spark_end_to_end(tmp_path):
    repo, _ = loop_demo.build(tmp_path)
    loop = {"launcher": "spark", "spark_master": "local[2]", "spark_conf": {"spark.ui.enabled": "false"},
            "np": 2, "jobs_dir": str(tmp_path / "jobs"), "data": [str(tmp_path / "upright-replay.npz")],
            "options": ["--epochs", "1"]}
    with serve(make_settings(repo, api_key=API_KEY, loop=loop)) as server:
        status, started = server.json("POST", "/v2/models/digits/finetune", headers=KEY)
        assert status == 202, started
        job = wait_for(lambda: (lambda s, b: b if b.get("state") not in ("pending", "running") else None)(
            *server.json("GET", f"/v2/models/digits/finetune/{started['job_id']}", headers=KEY)),
            what="job end", timeout=600)
        assert job["state"] == "succeeded", job
        assert job["result"]["status"] == "published" and job["result"]["summary"]["world_size"] == 2
        assert len(set(job["result"]["summary"]["weights_checksums"])) == 1
        assert job["message"] == f"published version {job['result']['version']}"
        assert any("<stdout>" in line for line in job["log_tail"])  # the ranks' output, through the driver
        argv = (tmp_path / "jobs" / job["job_id"] / "spec.json").read_text()
        assert '"--launcher"' in argv and '"spark.ui.enabled=false"' in argv
        assert job["result"]["version"] in server.repo.list_versions("digits")
