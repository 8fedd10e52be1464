"""What each fine-tune saw of a model's feedback: the loop's ledger, on the repository.

Every fine-tune, whoever launched it (the gateway's loop, ``tunegate finetune``, Spark,
Kubernetes), records its *data snapshot* in the manifest of the version it publishes
(``data_snapshot``)::

    {"feedback": {"store": "<model>/.feedback", "after": 0, "through": 124, "rows": 124,
                  "held_out": [[3, 3], [17, 21], ...]},     # its own validation rows, as ranges
     "other_stores": [...], "files": {"a.npz": "sha256:..."}}

``through`` is the highest sequence number of the model's feedback store it read (rows are
numbered by ``model_repo.feedback``, and numbers never change). A job that ends without
publishing (not promoted by its gate, or failed) appends the same record to
``<model>/.ledger/attempts.json`` (the last :data:`MAX_ATTEMPTS`, under the repository's
lock). From these the loop derives, whichever process asks:

- the trigger's *new samples*: rows after :func:`feedback_baseline`, the highest ``through``
  of every published version's snapshot and every attempt (rows a rejected or failed job
  already saw are not new again: the same rows from the same base would repeat the verdict;
  they stay in the store and the next job, started by new rows, trains on them too);
- shadow evaluation's held-back set: rows after the candidate's own ``through``
  (:func:`trained_through`), which it never trained on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .durable import atomic_write_json, exclusive_lock
from .errors import RepositoryError
from .manifest import Manifest
from .repository import Repository

DATA_SNAPSHOT = "data_snapshot"  # the manifest field
LEDGER_DIR = ".ledger"
ATTEMPTS_FILE = "attempts.json"
MAX_ATTEMPTS = 20


def trained_through(manifest: Manifest | None) -> int | None:
    """The highest feedback sequence number the version's job read of its model's store
    (None: it read none, or it was not fine-tuned)."""
    snapshot = manifest.extra.get(DATA_SNAPSHOT) if manifest is not None else None
    feedback = snapshot.get("feedback") if isinstance(snapshot, dict) else None
    through = feedback.get("through") if isinstance(feedback, dict) else None
    return through if isinstance(through, int) else None


def attempts_path(model_dir: Path) -> Path:
    return Path(model_dir) / LEDGER_DIR / ATTEMPTS_FILE


def read_attempts(model_dir: Path) -> list[dict[str, Any]]:
    """The jobs that ended without publishing, oldest first (blocking; [] if unreadable)."""
    try:
        data = json.loads(attempts_path(model_dir).read_bytes())
    except (OSError, ValueError):
        return []
    return [a for a in data if isinstance(a, dict)] if isinstance(data, list) else []


def record_attempt(model_dir: Path, *, through: int | None, outcome: str, base_version: int | None,
                   job: str | None = None, message: str = "") -> None:
    """Remember a job that ended without publishing, and what it had read (blocking)."""
    model_dir = Path(model_dir)
    entry = {"through": through, "outcome": outcome, "base_version": base_version, "job": job,
             "message": message[:500], "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with exclusive_lock(model_dir):
        attempts = read_attempts(model_dir) + [entry]
        path = attempts_path(model_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, attempts[-MAX_ATTEMPTS:])


def feedback_baseline(model_dir: Path, manifests: Mapping[int, Manifest | None]) -> int:
    """Rows numbered above this are new to the loop (see the module doc)."""
    seen = [t for m in manifests.values() if (t := trained_through(m)) is not None]
    seen += [a["through"] for a in read_attempts(model_dir) if isinstance(a.get("through"), int)]
    return max(seen, default=0)


def model_baseline(repo: Repository, model: str) -> int:
    """:func:`feedback_baseline` of ``model`` as its manifests say now (blocking)."""
    manifests: dict[int, Manifest | None] = {}
    for version in repo.list_versions(model):
        try:
            manifests[version] = repo.read_manifest(model, version)
        except RepositoryError:
            manifests[version] = None
    return feedback_baseline(repo.model_dir(model), manifests)


def outcomes(repo: Repository, model: str) -> list[tuple[float, bool]]:
    """Every fine-tune's end the ledger knows, newest first, as (Unix time, it helped): a
    promoted version helped; a rejected one, and an attempt that published nothing, did not
    (blocking). A candidate still undecided is no outcome yet."""
    import calendar

    def when(stamp: object) -> float | None:
        try:
            return float(calendar.timegm(time.strptime(str(stamp), "%Y-%m-%dT%H:%M:%SZ")))
        except ValueError:
            return None

    found: list[tuple[float | None, bool]] = [(when(a.get("at")), False) for a in read_attempts(repo.model_dir(model))]
    for version in repo.list_versions(model):
        try:
            manifest = repo.read_manifest(model, version)
        except RepositoryError:
            continue
        report = manifest.extra.get("canary")
        if manifest.extra.get("training") and isinstance(report, dict) and report.get("state"):
            found.append((when(report.get("decided_at")), manifest.status != "rejected"))
    return sorted(((t, ok) for t, ok in found if t is not None), reverse=True)


def held_out_ranges(sequences) -> list[list[int]]:
    """Sorted sequence numbers as [first, last] runs: a compact record of held-out rows."""
    runs: list[list[int]] = []
    for number in sorted(int(s) for s in sequences):
        if runs and number == runs[-1][1] + 1:
            runs[-1][1] = number
        else:
            runs.append([number, number])
    return runs
