"""How a compaction of the feedback store swaps shards so that a crash never loses or doubles a row.

Compaction (:mod:`model_repo.feedback_compact`) writes its new shards under temporary names
(``.compact-*.tmp``, which no reader lists), fsyncs them and the directory, and then, under the
store's lock, *commits* by writing a journal, ``.compaction.json``::

    {"writes": [{"tmp": ".compact-…-0.tmp", "name": "shard-000000000007.tgfb"}, …],
     "replaces": ["shard-000000000001.tgfb", …], "state": {"generation": 4, …}}

then renames each temporary file to its name, removes the shards it replaces, and removes the
journal. Before the journal exists the old shards are the store (a leftover temporary file is
ignored, and removed by the next compaction); once it exists the new shards are, and
:func:`recover` finishes the swap — every step is idempotent (a rename whose temporary file is
gone happened already; removing a removed shard is nothing) — whoever finds the journal:
a reader, the next compaction. Readers never see both old and new rows: they finish a
journal before reading, and they re-read when the store's *generation* (``.compaction-state.json``,
bumped inside each swap, before any rename) changed while they read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .durable import atomic_write_json, exclusive_lock, fsync_path

JOURNAL_FILE = ".compaction.json"
STATE_FILE = ".compaction-state.json"
TMP_PREFIX = ".compact-"


def read_state(directory: Path) -> dict[str, Any]:
    """The last compaction's state: ``generation`` (0: never compacted), ``replay_rows``, …"""
    try:
        state = json.loads((Path(directory) / STATE_FILE).read_bytes())
    except (OSError, ValueError):
        return {"generation": 0}
    return state if isinstance(state, dict) else {"generation": 0}


def generation(directory: Path) -> int:
    value = read_state(directory).get("generation", 0)
    return value if isinstance(value, int) else 0


def pending(directory: Path) -> bool:
    """A swap was committed and not finished (in progress under the lock, or its process died)."""
    return (Path(directory) / JOURNAL_FILE).exists()


def commit(directory: Path, writes: list[dict[str, str]], replaces: list[str], state: dict[str, Any]) -> None:
    """Write the journal (the commit point) and the new state; the caller holds the store's lock."""
    atomic_write_json(directory / JOURNAL_FILE, {"writes": writes, "replaces": replaces, "state": state})
    # Bumped before any rename: a reader that started before this sees the generation move.
    atomic_write_json(directory / STATE_FILE, state)


def recover(directory: Path, on_step=None) -> bool:
    """Finish a committed swap (the caller holds the store's lock); False if there was none."""
    directory = Path(directory)
    try:
        journal = json.loads((directory / JOURNAL_FILE).read_bytes())
    except FileNotFoundError:
        return False
    except ValueError:
        # atomic_write_json never leaves a partial journal: an unreadable one is not ours.
        raise OSError(f"{directory / JOURNAL_FILE}: unreadable compaction journal") from None
    atomic_write_json(directory / STATE_FILE, journal["state"])
    for write in journal["writes"]:
        tmp = directory / write["tmp"]
        if tmp.exists():
            os.replace(tmp, directory / write["name"])
    fsync_path(directory)
    _step(on_step, "renamed")
    outputs = {w["name"] for w in journal["writes"]}
    for name in journal["replaces"]:
        if name not in outputs:
            (directory / name).unlink(missing_ok=True)
    fsync_path(directory)
    _step(on_step, "removed")
    (directory / JOURNAL_FILE).unlink()
    fsync_path(directory)
    return True


def settle(directory: Path) -> int:
    """Finish a swap a dead compaction left (taking the store's lock only then); the generation."""
    directory = Path(directory)
    if pending(directory):
        with exclusive_lock(directory):
            recover(directory)
    return generation(directory)


def unchanged(directory: Path, seen: int) -> bool:
    """No swap began since :func:`settle` returned ``seen``."""
    return not pending(directory) and generation(directory) == seen


def remove_leftovers(directory: Path) -> int:
    """Remove temporary files of compactions that died before committing (the caller holds
    the compaction lock, so none is being written now)."""
    removed = 0
    for path in Path(directory).glob(TMP_PREFIX + "*"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed


def _step(on_step, name: str) -> None:
    if on_step is not None:
        on_step(name)
