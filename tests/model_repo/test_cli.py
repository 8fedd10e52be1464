"""``tunegate models`` as a user runs it (a subprocess of the real CLI): flags where the user
puts them, the canary state made visible, and promote/rollback writing the decisions the
gateway's canary controller writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from model_repo import PROMOTED, REJECTED, ROLLED_BACK, Repository, plan_versions, read_plan

from .conftest import publish_bytes


def tunegate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "TUNEGATE_REPO"}
    return subprocess.run([sys.executable, "-m", "tunegate_cli", *args], capture_output=True, text=True,
                          timeout=120, env={**environ, **(env or {})})


@pytest.fixture
def fine_tuned(repo: Repository) -> Repository:
    """Version 1 converted, 2 and 3 published by fine-tune jobs and not yet decided."""
    publish_bytes(repo, "m", b"one")
    publish_bytes(repo, "m", b"two", parent_version=1, training={"world_size": 2, "mode": "allreduce"})
    publish_bytes(repo, "m", b"three", parent_version=2, training={"world_size": 2, "mode": "allreduce"})
    return repo


@pytest.mark.parametrize("order", [
    ("--repo", "{repo}", "--json", "list"),
    ("list", "--repo", "{repo}", "--json"),
    ("--repo", "{repo}", "list", "--json"),
    ("--json", "list", "--repo", "{repo}"),
])
def test_repo_and_json_are_accepted_before_or_after_the_action(fine_tuned: Repository, order) -> None:
    result = tunegate("models", *(a.format(repo=fine_tuned.root) for a in order))
    assert result.returncode == 0, result.stderr
    assert [row["model"] for row in json.loads(result.stdout)] == ["m"]


def test_show_takes_its_flags_after_the_model(fine_tuned: Repository) -> None:
    result = tunegate("models", "--repo", str(fine_tuned.root), "show", "m", "--json", "--version", "1")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["manifest"]["version"] == 1


def test_the_repository_from_the_environment_or_a_usage_error(fine_tuned: Repository) -> None:
    listed = tunegate("models", "list", env={"TUNEGATE_REPO": str(fine_tuned.root)})
    assert listed.returncode == 0 and listed.stdout.startswith("MODEL"), listed.stderr
    missing = tunegate("models", "list")
    assert missing.returncode == 2
    assert "usage: tunegate models list" in missing.stderr and "--repo DIR" in missing.stderr


def test_list_shows_the_stable_version_and_the_pending_canary(fine_tuned: Repository) -> None:
    rows = json.loads(tunegate("models", "list", "--repo", str(fine_tuned.root), "--json").stdout)
    assert rows == [{"model": "m", "versions": [1, 2, 3], "available": [3], "version_policy": "latest 1",
                     "max_batch_size": 8, "stable": [1], "canary": 3, "pending": [2, 3], "rejected": [],
                     "retired": []}]
    text = tunegate("models", "list", "--repo", str(fine_tuned.root)).stdout.splitlines()
    assert text[0].split() == ["MODEL", "VERSIONS", "STABLE", "CANARY", "POLICY"]
    assert text[1].split() == ["m", "1,2,3", "1", "3", "latest", "1"]  # it said "SERVING 3"
    assert "tunegate models promote|rollback MODEL" in text[2]


def test_show_says_which_version_is_on_trial(fine_tuned: Repository) -> None:
    shown = tunegate("models", "show", "m", "--repo", str(fine_tuned.root))
    assert shown.stdout.splitlines()[:2] == [
        "m: stable version 1",
        "m: version 3 is a pending canary: " + shown.stdout.splitlines()[1].split(": ", 2)[2]]
    data = json.loads(tunegate("models", "show", "m", "--repo", str(fine_tuned.root), "--json").stdout)
    assert (data["stable"], data["canary"], data["rejected"]) == ([1], 3, [])


def test_promote_writes_the_controllers_decision_and_the_canary_serves_alone(fine_tuned: Repository) -> None:
    result = tunegate("models", "promote", "m", "--repo", str(fine_tuned.root), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"model": "m", "version": 3, "decision": "promoted", "stable": [3],
                                         "canary": None, "pending": [], "rejected": [], "retired": [1, 2]}
    report = fine_tuned.read_manifest("m", 3).extra["canary"]
    assert report["state"] == PROMOTED and report["version"] == 3 and report["stable_version"] == 1
    assert report["manual"] is True and fine_tuned.read_manifest("m", 3).status == "ready"
    # the same rule the gateway's registry plans with
    assert plan_versions(fine_tuned, "m", fine_tuned.read_config("m"), True) == ([3], None)
    again = tunegate("models", "promote", "m", "--repo", str(fine_tuned.root))
    assert again.returncode == 1
    assert again.stderr.strip() == ("tunegate models: error: model 'm' has no pending canary to promote "
                                    "(stable version 3); name one with --version")


def test_rollback_rejects_the_canary_and_the_next_undecided_one_takes_its_place(fine_tuned: Repository) -> None:
    result = tunegate("models", "rollback", "m", "--repo", str(fine_tuned.root))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:2] == ["rolled back m version 3", "m: stable version 1"]
    manifest = fine_tuned.read_manifest("m", 3)
    assert manifest.status == REJECTED and manifest.extra["canary"]["state"] == ROLLED_BACK
    plan = read_plan(fine_tuned, "m", fine_tuned.read_config("m"))
    assert (plan.serving, plan.canary, plan.rejected) == ([1, 2], 2, [3])

    last = tunegate("models", "rollback", "m", "--repo", str(fine_tuned.root), "--version", "2", "--json")
    assert json.loads(last.stdout)["stable"] == [1] and json.loads(last.stdout)["canary"] is None
    twice = tunegate("models", "rollback", "m", "--repo", str(fine_tuned.root), "--version", "3")
    assert twice.returncode == 1 and "already rolled back" in twice.stderr
    revived = tunegate("models", "promote", "m", "--repo", str(fine_tuned.root), "--version", "3")
    assert revived.returncode == 1 and "was rolled back; it cannot be promoted" in revived.stderr


def test_only_an_undecided_fine_tuned_version_can_be_promoted(fine_tuned: Repository) -> None:
    converted = tunegate("models", "promote", "m", "--repo", str(fine_tuned.root), "--version", "1")
    assert converted.returncode == 1 and "version 1 is not a pending canary" in converted.stderr
    ghost = tunegate("models", "rollback", "m", "--repo", str(fine_tuned.root), "--version", "9")
    assert ghost.returncode == 1 and "model 'm' has no version 9" in ghost.stderr
    assert read_plan(fine_tuned, "m", fine_tuned.read_config("m")).canary == 3  # nothing was written
