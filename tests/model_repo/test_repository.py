from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from model_repo import (
    ConfigError,
    IntegrityError,
    InvalidName,
    ModelNotFound,
    PublishError,
    Repository,
    VersionNotFound,
    parse_config,
)
from model_repo.config import CONFIG_FILE, format_config

from .conftest import publish_bytes, tiny_config


def test_publish_assigns_consecutive_versions_with_complete_manifest(repo: Repository) -> None:
    first = publish_bytes(repo, "mlp", b"one", parity={"max_abs": 0.0})
    second = publish_bytes(repo, "mlp", b"two", parent_version=1)
    assert (first.version, second.version) == (1, 2)
    assert repo.list_models() == ["mlp"]
    assert repo.list_versions("mlp") == [1, 2]
    manifest = repo.read_manifest("mlp", 2)
    assert manifest.parent_version == 1
    assert set(manifest.files) == {"model.onnx", "source/weights.bin"}
    assert repo.read_manifest("mlp", 1).parity == {"max_abs": 0.0}
    # nothing hidden is left behind: staging directories are gone
    assert sorted(p.name for p in (repo.root / "mlp").iterdir() if not p.name.startswith(".")) == ["1", "2", CONFIG_FILE]
    assert not [p for p in (repo.root / "mlp").iterdir() if p.name.startswith(".staging-")]


def test_version_numbers_are_never_reused(repo: Repository) -> None:
    publish_bytes(repo, "m", b"a")
    publish_bytes(repo, "m", b"b")
    repo.remove_version("m", 2)
    assert publish_bytes(repo, "m", b"c").version == 3


def test_failed_build_leaves_nothing(repo: Repository) -> None:
    with pytest.raises(RuntimeError):
        with repo.staging("m") as staged:
            (staged / "model.onnx").write_bytes(b"half")
            raise RuntimeError("conversion failed")
    assert not repo.has_model("m")
    assert not [p for p in (repo.root / "m").iterdir() if p.name.startswith(".staging-")]


def test_publish_refuses_staging_without_model(repo: Repository) -> None:
    with repo.staging("m") as staged, pytest.raises(PublishError, match="no model.onnx"):
        repo.publish("m", staged, config=tiny_config("m"))


def test_existing_config_is_kept_unless_replaced(repo: Repository) -> None:
    publish_bytes(repo, "m", b"a")
    edited = repo.read_config("m")
    edited.dynamic_batching.max_queue_delay_microseconds = 777
    repo.write_config("m", edited)
    publish_bytes(repo, "m", b"b")
    assert repo.read_config("m").dynamic_batching.max_queue_delay_microseconds == 777


def test_verify_detects_corruption_and_missing_files(repo: Repository) -> None:
    publish_bytes(repo, "m", b"payload")
    assert repo.verify("m", 1).sha256
    (repo.root / "m" / "1" / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(IntegrityError, match="model.onnx has sha256"):
        repo.verify("m", 1)
    (repo.root / "m" / "1" / "source" / "weights.bin").unlink()
    with pytest.raises(IntegrityError, match="source/weights.bin is missing"):
        repo.verify("m", 1)


@pytest.mark.parametrize("name", ["../x", "/abs", "a/b", ".hidden", "..", "", "x" * 200, "sp ace"])
def test_illegal_model_names_are_rejected(repo: Repository, name: str) -> None:
    with pytest.raises(InvalidName):
        repo.model_dir(name)


def test_symlink_out_of_repository_is_rejected(repo: Repository, tmp_path: Path) -> None:
    publish_bytes(repo, "m", b"a")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, repo.root / "evil")
    with pytest.raises(InvalidName, match="outside the repository"):
        repo.model_dir("evil")


def test_version_policy_resolution(repo: Repository) -> None:
    for payload in (b"1", b"2", b"3"):
        publish_bytes(repo, "m", payload)
    assert repo.resolve("m") == 3
    with pytest.raises(VersionNotFound, match="not available under the version policy"):
        repo.resolve("m", 2)
    config = repo.read_config("m")
    config.version_policy.latest.num_versions = 2
    repo.write_config("m", config)
    assert repo.available_versions("m") == [2, 3]
    assert repo.resolve("m", "2") == 2
    config.version_policy.specific.versions[:] = [1, 3]
    repo.write_config("m", config)
    assert repo.available_versions("m") == [1, 3]
    config.version_policy.all.SetInParent()
    repo.write_config("m", config)
    assert repo.available_versions("m") == [1, 2, 3]
    with pytest.raises(VersionNotFound, match="does not exist"):
        repo.resolve("m", 9)
    with pytest.raises(VersionNotFound, match="invalid version"):
        repo.resolve("m", "01")
    with pytest.raises(ModelNotFound):
        repo.resolve("nope")


def test_retention_keeps_newest(repo: Repository) -> None:
    for payload in (b"1", b"2", b"3", b"4"):
        publish_bytes(repo, "m", payload)
    assert repo.retain("m", 2) == [1, 2]
    assert repo.list_versions("m") == [3, 4]


def test_update_manifest_marks_rejected(repo: Repository) -> None:
    publish_bytes(repo, "m", b"a")
    repo.update_manifest("m", 1, status="rejected", reason="canary error rate 0.4")
    manifest = repo.read_manifest("m", 1)
    assert manifest.status == "rejected" and manifest.extra["reason"] == "canary error rate 0.4"
    repo.verify("m", 1)  # the manifest is not among the digested files


def test_config_round_trip_and_errors(repo: Repository) -> None:
    config = tiny_config("m")
    assert parse_config(format_config(config)) == config
    with pytest.raises(ConfigError, match="not a valid Triton ModelConfig"):
        parse_config("max_batch_size: 'eight'")
    with pytest.raises(ConfigError, match="invalid dims"):
        parse_config('input { name: "x" data_type: TYPE_FP32 dims: [ 0 ] }')


_PUBLISHER = """
import sys
from model_repo import Repository, TensorSpec, make_config
repo = Repository(sys.argv[1])
cfg = make_config("race", [TensorSpec("x", "FP32", (4,))], [TensorSpec("y", "FP32", (4,))], max_batch_size=8)
for i in range(int(sys.argv[3])):
    with repo.staging("race") as staged:
        (staged / "model.onnx").write_bytes((sys.argv[2] * 200_000).encode())
        print(repo.publish("race", staged, config=cfg).version, flush=True)
"""

_LISTER = """
import sys, time
from model_repo import Repository
repo = Repository(sys.argv[1])
deadline = time.time() + float(sys.argv[2])
seen = 0
while time.time() < deadline:
    if not repo.has_model("race"):
        continue
    for v in repo.list_versions("race"):
        try:
            repo.verify("race", v)   # every version a reader can see is complete
            seen += 1
        except Exception as exc:
            if (repo.root / "race" / str(v)).exists():
                print("PARTIAL", v, exc, flush=True)
                sys.exit(1)
print("checked", seen)
"""


def test_concurrent_publishers_get_distinct_versions_and_readers_never_see_partial(repo: Repository) -> None:
    repo.root.mkdir(parents=True)
    lister = subprocess.Popen([sys.executable, "-c", _LISTER, str(repo.root), "6"], stdout=subprocess.PIPE, text=True)
    publishers = [
        subprocess.Popen([sys.executable, "-c", _PUBLISHER, str(repo.root), tag, "8"], stdout=subprocess.PIPE, text=True)
        for tag in "ab"
    ]
    versions = []
    for proc in publishers:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        versions += [int(line) for line in out.split()]
    out, _ = lister.communicate(timeout=120)
    assert lister.returncode == 0, out
    assert sorted(versions) == list(range(1, 17))
    assert repo.list_versions("race") == list(range(1, 17))
    for v in versions:
        repo.verify("race", v)


def _tunegate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tunegate_cli", *args], capture_output=True, text=True, timeout=120)


def test_models_cli(repo: Repository) -> None:
    publish_bytes(repo, "m", b"a")
    publish_bytes(repo, "m", b"b")
    listed = _tunegate("models", "--repo", str(repo.root), "--json", "list")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == [
        {"model": "m", "versions": [1, 2], "available": [2], "version_policy": "latest 1", "max_batch_size": 8,
         "stable": [2], "canary": None, "pending": [], "rejected": [], "retired": [1]}
    ]
    shown = json.loads(_tunegate("models", "--repo", str(repo.root), "--json", "show", "m").stdout)
    assert shown["manifest"]["version"] == 2 and shown["config"]["input"][0]["dims"] == [4]

    assert _tunegate("models", "--repo", str(repo.root), "verify", "m").returncode == 0
    (repo.root / "m" / "1" / "model.onnx").write_bytes(b"bad")
    failed = _tunegate("models", "--repo", str(repo.root), "verify", "m")
    assert failed.returncode == 1 and "1: FAILED" in failed.stdout and "2: ok" in failed.stdout

    removed = _tunegate("models", "--repo", str(repo.root), "rm", "m", "--version", "1")
    assert removed.returncode == 0 and repo.list_versions("m") == [2]

    bad = _tunegate("models", "--repo", str(repo.root), "show", "../x")
    assert bad.returncode == 1 and "invalid model name '../x'" in bad.stderr
    missing = _tunegate("models", "--repo", str(repo.root / "nope"), "list")
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    unknown = _tunegate("models", "--repo", str(repo.root), "show", "ghost")
    assert unknown.returncode == 1 and "unknown model 'ghost'" in unknown.stderr


def test_published_files_are_readable_by_other_users(repo: Repository) -> None:
    publish_bytes(repo, "m", b"a")
    for path in (repo.root / "m" / CONFIG_FILE, repo.root / "m" / "1" / "manifest.json"):
        assert path.stat().st_mode & 0o044 == 0o044, path
