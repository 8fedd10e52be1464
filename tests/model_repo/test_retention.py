"""Retention on a real repository: the policy keeps what the plan serves or keeps warm, the
canary, a running job's base and the last N decided versions, removes the rest, and the lineage
log still explains every removed version (``tunegate models show``, a subprocess of the CLI);
``tunegate models gc --dry-run`` removes nothing."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from model_repo import PROMOTED, REJECTED, Repository
from model_repo.canary_state import decision_report
from model_repo.loop_gc import disk_usage, gc_capture, gc_drift, gc_evidence, gc_jobs, gc_requests, gc_results
from model_repo.retention import gc_versions, read_lineage, removed_versions, versions_to_keep

from .conftest import publish_bytes
from .test_cli import tunegate


def _history(repo: Repository) -> None:
    """Version 1 converted; 2..9 fine-tuned, each from the stable one before it: 2-7 promoted
    in turn (3 and 5 rejected after promotion, so the stable chain skips them), 8 promoted
    (stable, replaced 7: warm), 9 pending (the canary)."""
    publish_bytes(repo, "m", b"v1")
    stable = 1
    for version in range(2, 10):
        publish_bytes(repo, "m", f"v{version}".encode(), parent_version=stable,
                      training={"world_size": 1, "mode": "allreduce"},
                      data_snapshot={"feedback": {"after": 0, "through": version * 100, "rows": version * 100,
                                                  "held_out": [[1, 5]]}},
                      metrics={"accuracy": 0.9})
        if version == 9:
            break
        report = decision_report(version, stable, PROMOTED, "test")
        if version in (3, 5):
            repo.update_manifest("m", version, status=REJECTED, canary=report)
        else:
            repo.update_manifest("m", version, canary=report)
            stable = version


def test_policy_keeps_what_it_must_and_removes_the_rest(repo: Repository) -> None:
    _history(repo)
    loop_dir = repo.model_dir("m") / ".loop"
    loop_dir.mkdir()
    (loop_dir / "jobs.json").write_text(json.dumps({"running": {"job_id": "j", "base_version": 2}}))
    keep = versions_to_keep(repo, "m", keep_versions=2)
    assert keep == {9: "canary", 8: "stable", 7: "warm (rollback)", 2: "base of the running job",
                    6: "among the last 2 decided", 5: "among the last 2 decided"}
    result = gc_versions(repo, "m", keep_versions=2)
    assert result.removed == [1, 3, 4]
    assert repo.list_versions("m") == [2, 5, 6, 7, 8, 9]
    # Every removed version is explained by the log, digests and verdicts included.
    logged = removed_versions(repo, "m")
    assert sorted(logged) == [1, 3, 4]
    assert logged[3]["status"] == REJECTED and logged[3]["canary"]["state"] == PROMOTED
    assert logged[4]["parent_version"] == 2 and logged[4]["data_snapshot"] == {"after": 0, "through": 400,
                                                                                "rows": 400}
    assert len(logged[4]["sha256"]) == 64 and "model.onnx" in logged[4]["files"]
    assert logged[4]["gate"] == {"accuracy": 0.9} and "removed_at" in logged[4]
    # Idempotent: a second pass removes nothing and logs nothing twice.
    lines = (repo.model_dir("m") / ".ledger" / "lineage.jsonl").read_text().splitlines()
    assert gc_versions(repo, "m", keep_versions=2).removed == []
    assert (repo.model_dir("m") / ".ledger" / "lineage.jsonl").read_text().splitlines() == lines


def test_the_job_finishing_frees_its_base(repo: Repository) -> None:
    _history(repo)
    assert set(versions_to_keep(repo, "m", keep_versions=1)) == {6, 7, 8, 9}
    assert gc_versions(repo, "m", keep_versions=0).removed == [1, 2, 3, 4, 5, 6]
    assert repo.list_versions("m") == [7, 8, 9]  # warm, stable, canary: never removed
    assert set(read_lineage(repo.model_dir("m"))) == {1, 2, 3, 4, 5, 6}


def test_show_explains_a_removed_version_from_the_log(repo: Repository) -> None:
    _history(repo)
    gc_versions(repo, "m", keep_versions=1)
    shown = tunegate("models", "show", "m", "--version", "4", "--repo", str(repo.root), "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["manifest"] is None and data["removed"]["version"] == 4
    assert data["removed"]["parent_version"] == 2 and data["removed"]["canary"]["state"] == PROMOTED
    assert "was removed from disk" in shown.stderr
    missing = tunegate("models", "show", "m", "--version", "40", "--repo", str(repo.root))
    assert missing.returncode != 0 and "no version 40" in missing.stderr


def _loop_litter(repo: Repository, jobs_dir: Path) -> None:
    """What a long-running loop leaves: 30 finished jobs and one running, evidence of decided
    canaries, a dead process's drift counts, an answer nobody took, a dead instance's captures."""
    old = time.time() - 7200
    for i in range(31):
        job = jobs_dir / f"job-{i:03d}"
        job.mkdir(parents=True)
        (job / "spec.json").write_text(json.dumps({"model": "m", "argv": []}))
        if i < 30:
            (job / "status.json").write_text(json.dumps({"state": "succeeded", "model": "m"}))
            os.utime(job, (old + i, old + i))
        else:
            (job / "process.json").write_text(json.dumps({"pid": os.getpid(), "model": "m"}))
    loop_dir = repo.model_dir("m") / ".loop"
    for version in (2, 4, 9):
        (loop_dir / f"canary-v{version}").mkdir(parents=True)
        (loop_dir / f"canary-v{version}" / "p1.json").write_text("{}")
    (loop_dir / "drift").mkdir()
    for name, when in (("dead", old), ("live", time.time())):
        (loop_dir / "drift" / f"{name}.json").write_text("{}")
        os.utime(loop_dir / "drift" / f"{name}.json", (when, when))
    requests = repo.root / ".loop" / "requests"
    requests.mkdir(parents=True)
    (requests / "abc.answer.json").write_text("{}")
    os.utime(requests / "abc.answer.json", (old, old))
    (requests / "fresh.json").write_text("{}")
    dead = repo.model_dir("m") / ".capture" / "dead-instance"
    dead.mkdir(parents=True)
    (dead / "seg-00000001.cap").write_bytes(b"x" * 100)
    (dead / "seg-00000001.claims").write_bytes(b"y" * 41)
    for path in (dead / "seg-00000001.cap", dead / "seg-00000001.claims", dead):
        os.utime(path, (old, old))
    live = repo.model_dir("m") / ".capture" / "live-instance"
    live.mkdir()
    (live / "seg-00000007.cap").write_bytes(b"x")
    (live / "seg-00000003.labelled").mkdir()  # claims of a segment already rotated out


def test_the_loops_other_files_are_bounded(repo: Repository, tmp_path: Path) -> None:
    _history(repo)
    jobs_dir = repo.root / ".jobs"
    _loop_litter(repo, jobs_dir)
    before = disk_usage(repo, "m")
    removed_jobs = gc_jobs(jobs_dir, "m", keep=5)
    assert [p.name for p in removed_jobs] == [f"job-{i:03d}" for i in range(25)]
    assert sorted(p.name for p in jobs_dir.iterdir()) == [f"job-{i:03d}" for i in range(25, 31)]  # 5 + running
    assert sorted(p.name for p in gc_evidence(repo, "m")) == ["canary-v2", "canary-v4"]
    assert sorted(p.name for p in (repo.model_dir("m") / ".loop").glob("canary-v*")) == ["canary-v9"]
    assert [p.name for p in gc_drift(repo.model_dir("m"), 3600)] == ["dead.json"]
    assert [p.name for p in gc_requests(repo.root, 3600)] == ["abc.answer.json"]
    assert sorted(p.name for p in gc_capture(repo.model_dir("m"), 3600)) == ["dead-instance",
                                                                            "seg-00000003.labelled"]
    assert sorted(p.name for p in (repo.model_dir("m") / ".capture").iterdir()) == ["live-instance"]
    # Cluster jobs' outcome files, one per job: the newest keep_jobs stay; the trainer's own
    # report (.training: metrics.json, curve.png) is rewritten by every job, so left alone.
    results = repo.model_dir("m") / ".finetune"
    results.mkdir()
    for i in range(8):
        (results / f"job-{i}.json").write_text("{}")
        os.utime(results / f"job-{i}.json", (1000 + i, 1000 + i))
    assert [p.name for p in gc_results(repo.model_dir("m"), keep=5)] == ["job-0.json", "job-1.json", "job-2.json"]
    after = disk_usage(repo, "m")
    assert (before["jobs"]["files"], after["jobs"]["files"]) == (30 * 2 + 2, 5 * 2 + 2)
    assert after["evidence"]["files"] == 1 and after["capture"]["files"] == 1


def test_gc_dry_run_removes_nothing_and_gc_applies_the_policy(repo: Repository) -> None:
    _history(repo)
    _loop_litter(repo, repo.root / ".jobs")

    def snapshot() -> list[str]:
        return sorted(str(p.relative_to(repo.root)) for p in repo.root.rglob("*") if p.name != ".lock")

    before = snapshot()
    dry = tunegate("models", "gc", "m", "--dry-run", "--keep-versions", "2", "--keep-jobs", "5",
                   "--repo", str(repo.root), "--json")
    assert dry.returncode == 0, dry.stderr
    would = json.loads(dry.stdout)["removed"]
    assert snapshot() == before
    assert would["versions"] == [1, 2, 3, 4] and len(would["jobs"]) == 25 and len(would["evidence"]) == 2
    done = tunegate("models", "gc", "m", "--keep-versions", "2", "--keep-jobs", "5", "--repo", str(repo.root))
    assert done.returncode == 0, done.stderr
    assert "removed versions: 1, 2, 3, 4" in done.stdout
    assert repo.list_versions("m") == [5, 6, 7, 8, 9]
    assert json.loads(tunegate("models", "gc", "m", "--keep-versions", "2", "--keep-jobs", "5", "--repo",
                               str(repo.root), "--json").stdout)["removed"] == {
        "versions": [], "jobs": [], "training": [], "evidence": [], "drift": [], "capture": [], "requests": []}
