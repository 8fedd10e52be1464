from __future__ import annotations

from model_repo import Change, RepoEvent, Repository, RepositoryWatcher

from .conftest import publish_bytes


def test_watcher_reports_versions_models_and_config_changes(repo: Repository) -> None:
    publish_bytes(repo, "a", b"1")
    watcher = RepositoryWatcher(repo)
    assert watcher.poll() == []

    publish_bytes(repo, "a", b"2")
    publish_bytes(repo, "b", b"1")
    assert watcher.poll() == [
        RepoEvent(Change.VERSION_ADDED, "a", 2),
        RepoEvent(Change.MODEL_ADDED, "b"),
        RepoEvent(Change.VERSION_ADDED, "b", 1),
    ]

    config = repo.read_config("a")
    config.max_batch_size = 16
    repo.write_config("a", config)
    repo.remove_version("a", 1)
    assert watcher.poll() == [RepoEvent(Change.CONFIG_CHANGED, "a"), RepoEvent(Change.VERSION_REMOVED, "a", 1)]
    assert watcher.poll() == []


def test_watcher_from_empty_reports_existing(repo: Repository) -> None:
    publish_bytes(repo, "a", b"1")
    assert RepositoryWatcher(repo, from_empty=True).poll() == [
        RepoEvent(Change.MODEL_ADDED, "a"),
        RepoEvent(Change.VERSION_ADDED, "a", 1),
    ]


def test_staging_directories_are_invisible_to_the_watcher(repo: Repository) -> None:
    publish_bytes(repo, "a", b"1")
    watcher = RepositoryWatcher(repo)
    with repo.staging("a") as staged:
        (staged / "model.onnx").write_bytes(b"half written")
        assert watcher.poll() == []


def test_a_manifest_rewrite_is_reported_once_with_its_version(repo: Repository) -> None:
    publish_bytes(repo, "a", b"1")
    publish_bytes(repo, "a", b"2")
    watcher = RepositoryWatcher(repo)
    # What `tunegate models rollback` writes: an atomic rename, so a new inode every time.
    repo.update_manifest("a", 2, status="rejected")
    assert watcher.poll() == [RepoEvent(Change.MANIFEST_CHANGED, "a", 2)]
    assert watcher.poll() == []
    repo.update_manifest("a", 1, canary={"state": "promoted"})
    repo.update_manifest("a", 1, canary={"state": "promoted"})  # twice between polls: one event
    assert watcher.poll() == [RepoEvent(Change.MANIFEST_CHANGED, "a", 1)]
    publish_bytes(repo, "a", b"3")  # a new version is VERSION_ADDED only, not a manifest change
    assert watcher.poll() == [RepoEvent(Change.VERSION_ADDED, "a", 3)]
