"""One truth for the loop (issue 22), with real processes: the `tunegate` CLI, `tunegate
finetune` through a real `horovodrun`, and a real gateway over the same repository. A
rollback, a command-line fine-tune or a restart never makes the loop train from the wrong
version, count used feedback as new, or grade a candidate on its own training data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model_repo import Repository
from model_repo.feedback import FeedbackWriter, feedback_dir, read_feedback
from model_repo.ledger import trained_through
from tests.gateway.conftest import API_KEY, make_settings, serve, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "packaging"))

import example_repo  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KEY = {"X-API-Key": API_KEY}
QUICK = ["--epochs", "1", "--np", "1"]
ALWAYS = ["--gate", "loss:-1000"]  # passes whatever the loss did: these tests are about the ledger


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ledger") / "repo"
    example_repo.main(["--repo", str(root), "--name", "digits"])
    return root


@pytest.fixture
def repo(digits, tmp_path) -> Repository:
    shutil.copytree(digits, tmp_path / "repo")
    return Repository(tmp_path / "repo")


def tunegate(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "tunegate_cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def add_feedback(repo: Repository, rows: int, offset: int = 0) -> range:
    x, _, y, _ = example_repo.digits_split()
    take = np.arange(offset, offset + rows) % len(y)
    with FeedbackWriter(feedback_dir(repo.root, "digits")) as writer:
        return writer.append({"pixels": x[take].astype(np.float32)}, y[take].astype(np.int64))


def finetune(repo: Repository, *extra: str, cwd: Path | None = None, where: str | None = None):
    return tunegate("finetune", "--repo", where or str(repo.root), "--model", "digits", "--data", "feedback:",
                    *QUICK, *extra, cwd=cwd)


def test_after_a_rollback_every_actor_fine_tunes_the_stable_version(repo, tmp_path):
    first = add_feedback(repo, 60)
    published = finetune(repo, *ALWAYS)
    assert published.returncode == 0, published.stderr
    assert repo.read_manifest("digits", 2).parent_version == 1
    assert trained_through(repo.read_manifest("digits", 2)) == first[-1]
    for step in (["promote", "digits"], ["rollback", "digits", "--version", "2"]):
        done = tunegate("models", "--repo", str(repo.root), *step)
        assert done.returncode == 0, done.stderr
    refused = finetune(repo, "--version", "2")
    assert refused.returncode == 2 and "rejected" in refused.stderr and "stable version is 1" in refused.stderr
    # Without --version: from version 1, the stable one, not from the newest on disk.
    again = finetune(repo, *ALWAYS)
    assert again.returncode == 0, again.stderr
    assert repo.read_manifest("digits", 3).parent_version == 1
    assert tunegate("models", "--repo", str(repo.root), "rollback", "digits").returncode == 0  # 3 rejected too
    # The gateway's own job: once, from version 1, on the rows after every snapshot so far.
    loop = {"trigger": "samples", "trigger_samples": 30, "np": 1, "data": ["feedback:"], "shadow": False,
            "trigger_min_interval_seconds": 0, "trigger_backoff_seconds": 0,  # two rollbacks just now
            "options": ["--epochs", "1", *ALWAYS], "jobs_dir": str(tmp_path / "jobs"),
            "canary_wait_for_labels": True, "canary_window_seconds": None}
    with serve(make_settings(repo.root, api_key=API_KEY, loop=loop)) as server:
        meta = lambda: server.client().get_model_metadata("digits")["parameters"]  # noqa: E731
        wait_for(lambda: meta().get("feedback_samples_since_job") == 0, what="the trigger's first count")
        add_feedback(repo, 30, offset=60)
        wait_for(lambda: 4 in repo.list_versions("digits"), what="the automatic job's version", timeout=300)
        assert repo.read_manifest("digits", 4).parent_version == 1
        wait_for(lambda: meta().get("canary", {}).get("version") == 4, what="version 4 on trial")
        wait_for(lambda: (meta().get("last_finetune_job") or {}).get("state") == "succeeded", what="the job's end")
        # Rows above the trigger while version 4 is undecided: counted, and no second job. The
        # second count shows a whole pass of the leader's duties ran after the first.
        add_feedback(repo, 40, offset=90)
        wait_for(lambda: meta().get("feedback_samples_since_job") == 40, what="the trigger's count after the job")
        add_feedback(repo, 1, offset=130)
        wait_for(lambda: meta().get("feedback_samples_since_job") == 41, what="a later pass of the trigger")
        assert len(list((tmp_path / "jobs").iterdir())) == 1 and "finetune_job" not in meta()
        assert "finetune_waiting" not in meta()  # held back by the candidate on trial, not by pacing


def test_a_command_line_job_is_not_new_to_the_gateway_nor_its_rows_held_back(repo, tmp_path):
    from gateway.loop.shadow import load_held_back

    add_feedback(repo, 60)
    published = finetune(repo, *ALWAYS)
    assert published.returncode == 0, published.stderr
    through = trained_through(repo.read_manifest("digits", 2))
    assert through == 60
    assert load_held_back(repo.root, "digits", through, ["pixels"]) is None  # nothing it did not see
    new = add_feedback(repo, 25, offset=300)
    loop = {"trigger": "samples", "trigger_samples": 1000, "min_labelled": 20, "shadow": True,
            "canary_wait_for_labels": True, "canary_window_seconds": None}
    with serve(make_settings(repo.root, api_key=API_KEY, loop=loop)) as server:
        meta = lambda: server.client().get_model_metadata("digits")["parameters"]  # noqa: E731
        report = wait_for(lambda: repo.read_manifest("digits", 2).extra.get("shadow"), what="the shadow report")
        # Exactly the rows numbered after its snapshot: 25, not the 85 in the store.
        assert report["held_back"]["examples"] == len(new) == 25 and report["held_back"]["status"] != "insufficient"
        wait_for(lambda: meta().get("feedback_samples_since_job") == 25, what="only the new rows count")
    held = load_held_back(repo.root, "digits", through, ["pixels"])
    stored = read_feedback(feedback_dir(repo.root, "digits"), after=through)
    assert len(held) == 25 and stored.sequences.tolist() == list(new)


def test_a_gate_failure_is_one_line_and_exit_3_with_a_relative_repository(repo, tmp_path):
    add_feedback(repo, 60)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    relative = os.path.relpath(repo.root, elsewhere)
    failed = tunegate("finetune", "--repo", relative, "--model", "digits", "--data", "feedback:", "--epochs", "1",
                      "--np", "2", "--gate", "accuracy:+0.5", cwd=elsewhere)
    assert failed.returncode == 3, failed.stderr
    assert "Traceback" not in failed.stderr and "Traceback" not in failed.stdout
    assert "gate failed" in failed.stderr.splitlines()[-1]
    assert repo.list_versions("digits") == [1]
    (attempt,) = json.loads((repo.model_dir("digits") / ".ledger" / "attempts.json").read_text())
    assert attempt["outcome"] == "not_promoted" and attempt["through"] == 60 and attempt["base_version"] == 1


def test_two_jobs_from_one_base_never_both_publish(repo):
    add_feedback(repo, 60)
    assert finetune(repo, *ALWAYS).returncode == 0
    # The stable version is still 1 (2 is an undecided candidate): a second job from 1 loses.
    second = finetune(repo, *ALWAYS, "--version", "1")
    assert second.returncode == 3 and "already fine-tuned from version 1" in second.stderr
    assert repo.list_versions("digits") == [1, 2]
