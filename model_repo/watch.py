"""A cheap polling watcher: one ``scandir`` per model and a ``stat`` of each config.

Versions appear by rename, so anything the watcher sees is complete. The gateway calls
``poll()`` from a worker thread every few seconds and acts on the events.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from .config import CONFIG_FILE
from .errors import RepositoryError
from .repository import Repository


class Change(str, Enum):
    MODEL_ADDED = "model_added"
    MODEL_REMOVED = "model_removed"
    VERSION_ADDED = "version_added"
    VERSION_REMOVED = "version_removed"
    CONFIG_CHANGED = "config_changed"


@dataclass(frozen=True)
class RepoEvent:
    change: Change
    model: str
    version: int | None = None


@dataclass(frozen=True)
class _ModelState:
    config_stamp: tuple[int, int, int]
    versions: frozenset[int]


class RepositoryWatcher:
    def __init__(self, repo: Repository, *, from_empty: bool = False) -> None:
        """With ``from_empty`` the first ``poll()`` reports everything already there."""
        self.repo = repo
        self._state: dict[str, _ModelState] = {} if from_empty else self._snapshot()

    def _snapshot(self) -> dict[str, _ModelState]:
        state = {}
        for model in self.repo.list_models():
            try:
                st = os.stat(Path(self.repo.root, model, CONFIG_FILE))
                versions = frozenset(self.repo.list_versions(model))
            except (OSError, RepositoryError):
                continue  # removed between listing and looking: next poll says so
            state[model] = _ModelState((st.st_mtime_ns, st.st_size, st.st_ino), versions)
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
        self._state = new
        return events
