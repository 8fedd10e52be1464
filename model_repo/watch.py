"""A cheap polling watcher: one ``scandir`` per model, a ``stat`` of each config and of
each version's manifest.

Versions appear by rename, so anything the watcher sees is complete. Manifests are
rewritten by rename too (``atomic_write_json``), so a decision written into one (a canary
promoted or rolled back by ``tunegate models``) changes its inode and shows as
``MANIFEST_CHANGED``. The gateway calls ``poll()`` from a worker thread every few seconds
and acts on the events.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from .config import CONFIG_FILE
from .errors import RepositoryError
from .manifest import MANIFEST_FILE
from .repository import Repository


class Change(str, Enum):
    MODEL_ADDED = "model_added"
    MODEL_REMOVED = "model_removed"
    VERSION_ADDED = "version_added"
    VERSION_REMOVED = "version_removed"
    CONFIG_CHANGED = "config_changed"
    MANIFEST_CHANGED = "manifest_changed"  # a version's manifest.json was rewritten


@dataclass(frozen=True)
class RepoEvent:
    change: Change
    model: str
    version: int | None = None


Stamp = tuple[int, int, int] | None  # (st_mtime_ns, st_size, st_ino); None: no such file


def _stamp(path: Path) -> Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


@dataclass(frozen=True)
class _ModelState:
    config_stamp: Stamp
    manifests: dict[int, Stamp]  # version -> its manifest's stamp

    @property
    def versions(self) -> frozenset[int]:
        return frozenset(self.manifests)


class RepositoryWatcher:
    def __init__(self, repo: Repository, *, from_empty: bool = False) -> None:
        """With ``from_empty`` the first ``poll()`` reports everything already there."""
        self.repo = repo
        self._state: dict[str, _ModelState] = {} if from_empty else self._snapshot()

    def _snapshot(self) -> dict[str, _ModelState]:
        state = {}
        for model in self.repo.list_models():
            model_dir = Path(self.repo.root, model)
            config_stamp = _stamp(model_dir / CONFIG_FILE)
            try:
                versions = self.repo.list_versions(model)
            except (OSError, RepositoryError):
                continue  # removed between listing and looking: next poll says so
            if config_stamp is None:
                continue
            state[model] = _ModelState(config_stamp,
                                       {v: _stamp(model_dir / str(v) / MANIFEST_FILE) for v in versions})
        return state

    def poll(self) -> list[RepoEvent]:
        new = self._snapshot()
        events: list[RepoEvent] = []
        for model in sorted(self._state.keys() - new.keys()):
            events += [RepoEvent(Change.VERSION_REMOVED, model, v) for v in sorted(self._state[model].versions)]
            events.append(RepoEvent(Change.MODEL_REMOVED, model))
        for model in sorted(new.keys()):
            before = self._state.get(model)
            now = new[model]
            if before is None:
                events.append(RepoEvent(Change.MODEL_ADDED, model))
                events += [RepoEvent(Change.VERSION_ADDED, model, v) for v in sorted(now.versions)]
                continue
            if before.config_stamp != now.config_stamp:
                events.append(RepoEvent(Change.CONFIG_CHANGED, model))
            events += [RepoEvent(Change.VERSION_REMOVED, model, v) for v in sorted(before.versions - now.versions)]
            events += [RepoEvent(Change.VERSION_ADDED, model, v) for v in sorted(now.versions - before.versions)]
            events += [RepoEvent(Change.MANIFEST_CHANGED, model, v) for v in sorted(now.versions & before.versions)
                       if now.manifests[v] != before.manifests[v]]
        self._state = new
        return events
