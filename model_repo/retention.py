"""Version retention: which of a model's versions stay on disk, and the lineage log that
explains the ones removed.

A loop that fine-tunes every hour publishes a version every hour; the version policy serves
one or two. :func:`versions_to_keep` keeps, whatever else happens:

- every version the plan serves (the stable ones and the canary) and every pending one
  (an undecided fine-tune may still become the canary);
- the warm rollback version: the stable version the newest promotion replaced, *whatever
  the gateway's rollback window* (the command line cannot know the window, and a version
  loaded warm must never vanish under a gateway);
- the base of a running job, as the gateway's leader records it in
  ``<model>/.loop/jobs.json`` (read as plain JSON: model_repo knows nothing of the gateway);
- the newest ``keep_versions`` decided versions (promoted, rejected, retired or ordinary).

Everything else is removed with :meth:`Repository.remove_version` (a rename under the
model's lock, so no reader sees half of a version). Before a version's directory goes, its
lineage is appended to ``<model>/.ledger/lineage.jsonl`` (one JSON line per version, fsynced):
parent, data snapshot summary, gate metrics, shadow and canary verdicts, digests. So
``tunegate models show M --version N`` and the dashboard still explain a removed version, and
a manifest's ``parent_version`` never points at nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .canary_state import PROMOTED, read_plan
from .durable import exclusive_lock, fsync_path
from .errors import RepositoryError
from .ledger import DATA_SNAPSHOT, LEDGER_DIR
from .manifest import Manifest
from .repository import _TRASH_PREFIX, Repository

LINEAGE_FILE = "lineage.jsonl"
LOOP_DIR = ".loop"  # the gateway's loop directory beside the versions (gateway.loop.evidence.LOOP_DIR)
JOBS_RECORD = "jobs.json"  # the leader's fine-tune record in it (gateway.loop.jobs.record)


@dataclass(frozen=True)
class RetentionPolicy:
    """How much the loop keeps of what it writes (the gateway's ``LoopSettings`` fill it)."""

    keep_versions: int = 10
    """Decided versions kept beyond those that must stay (the newest ones)."""

    keep_jobs: int = 20
    """Finished job directories kept per model under ``<repo>/.jobs`` (running ones always)."""

    stale_seconds: float = 3600.0
    """Files of processes gone this long are removed: drift counts, capture directories,
    unanswered leader requests."""


@dataclass
class VersionGc:
    """What :func:`gc_versions` kept, removed (or would remove), and why each was kept."""

    kept: dict[int, str] = field(default_factory=dict)
    removed: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"kept": {str(v): why for v, why in sorted(self.kept.items())}, "removed": self.removed}


def running_base(model_dir: Path) -> int | None:
    """The base version of the job the gateway's leader is running for the model, if any."""
    try:
        record = json.loads((Path(model_dir) / LOOP_DIR / JOBS_RECORD).read_bytes())
        base = (record.get("running") or {}).get("base_version")
    except (OSError, ValueError, AttributeError):
        return None
    return base if isinstance(base, int) else None


def versions_to_keep(repo: Repository, model: str, keep_versions: int) -> dict[int, str]:
    """Version -> why it stays (blocking: reads every manifest)."""
    # warm_seconds=inf: the previous stable of the newest promotion counts as warm for ever.
    plan = read_plan(repo, model, repo.read_config(model), canary=True, warm_seconds=float("inf"))
    keep: dict[int, str] = {}
    for version in plan.pending:
        keep[version] = "pending"
    for version in plan.warm:
        keep[version] = "warm (rollback)"
    for version in plan.stable:
        keep[version] = "stable"
    if plan.canary is not None:
        keep[plan.canary] = "canary"
    previous = _previous_stable(plan.manifests, plan.stable)
    if previous is not None and previous not in keep:
        keep[previous] = "warm (rollback)"
    base = running_base(repo.model_dir(model))
    if base is not None and base in plan.manifests:
        keep.setdefault(base, "base of the running job")
    # History beyond what must stay: the newest decided versions not kept for another reason.
    decided = [v for v in sorted(plan.manifests) if v not in plan.pending and v not in keep]
    for version in decided[-keep_versions:] if keep_versions > 0 else []:
        keep[version] = f"among the last {keep_versions} decided"
    return keep


def _previous_stable(manifests: dict[int, Manifest | None], stable: list[int]) -> int | None:
    # read_plan leaves warm empty beside a canary or when the promotion has no time; the
    # promotion's own record names the version it replaced either way.
    newest = manifests.get(stable[-1]) if stable else None
    report = newest.extra.get("canary") if newest is not None else None
    if isinstance(report, dict) and report.get("state") == PROMOTED:
        previous = report.get("stable_version")
        if isinstance(previous, int) and previous in manifests:
            return previous
    return None


def gc_versions(repo: Repository, model: str, keep_versions: int, *, dry_run: bool = False) -> VersionGc:
    """Remove the versions :func:`versions_to_keep` does not keep, each after its lineage is
    logged (blocking). ``dry_run``: only say which."""
    result = VersionGc(kept=versions_to_keep(repo, model, keep_versions))
    for version in repo.list_versions(model):
        if version in result.kept:
            continue
        result.removed.append(version)
        if dry_run:
            continue
        try:
            manifest = repo.read_manifest(model, version)
        except RepositoryError:
            manifest = None  # a hand-made version without a manifest: nothing to explain
        if manifest is not None:
            log_lineage(repo.model_dir(model), manifest, removed=True)
        repo.remove_version(model, version)
    if not dry_run:
        _remove_trash(repo.model_dir(model))
    return result


def _remove_trash(model_dir: Path) -> None:
    # A process killed inside remove_version leaves its renamed directory behind.
    for entry in os.scandir(model_dir):
        if entry.name.startswith(_TRASH_PREFIX) and entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)


# ------------------------------------------------------------------ the lineage log
def lineage_path(model_dir: Path) -> Path:
    return Path(model_dir) / LEDGER_DIR / LINEAGE_FILE


def lineage_entry(manifest: Manifest) -> dict[str, Any]:
    """What outlives a version's files: enough to say where it came from and what it passed."""
    entry: dict[str, Any] = {"version": manifest.version, "created_at": manifest.created_at,
                             "parent_version": manifest.parent_version, "status": manifest.status,
                             "sha256": manifest.sha256, "files": dict(manifest.files),
                             "data_digest": manifest.data_digest, "gate": manifest.metrics}
    snapshot = manifest.extra.get(DATA_SNAPSHOT)
    feedback = snapshot.get("feedback") if isinstance(snapshot, dict) else None
    if isinstance(feedback, dict):
        # The summary, not the held-out ranges: they can be long, and no reader needs them
        # once the version is gone.
        entry["data_snapshot"] = {k: feedback.get(k) for k in ("after", "through", "rows")}
    training = manifest.extra.get("training")
    if isinstance(training, dict):
        entry["training"] = {k: training[k] for k in ("world_size", "mode", "examples") if k in training}
    for key in ("shadow", "canary"):
        report = manifest.extra.get(key)
        if isinstance(report, dict):
            entry[key] = {k: report.get(k) for k in ("status", "passed", "state", "reason", "decided_at",
                                                      "stable_version") if k in report}
    return entry


def log_lineage(model_dir: Path, manifest: Manifest, *, removed: bool = False) -> None:
    """Append ``manifest``'s lineage to the log (blocking), unless the same entry is there.
    Under the model's lock, so two collectors never interleave lines."""
    entry = lineage_entry(manifest)
    if removed:
        entry["removed_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    path = lineage_path(model_dir)
    with exclusive_lock(Path(model_dir)):
        logged = read_lineage(model_dir).get(manifest.version)
        if logged is not None and _same(logged, entry):
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as f:
            f.write((json.dumps(entry, sort_keys=True) + "\n").encode())
            f.flush()
            os.fsync(f.fileno())
        fsync_path(path.parent)


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    strip = lambda d: {k: v for k, v in d.items() if k != "removed_at"}  # noqa: E731
    return strip(a) == strip(b)


def read_lineage(model_dir: Path) -> dict[int, dict[str, Any]]:
    """Version -> its last logged lineage (blocking). A torn last line (a crash mid-append)
    and lines that do not parse are skipped."""
    out: dict[int, dict[str, Any]] = {}
    try:
        text = lineage_path(model_dir).read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("version"), int):
            out[entry["version"]] = entry
    return out


def removed_versions(repo: Repository, model: str) -> dict[int, dict[str, Any]]:
    """The logged lineage of the versions no longer on disk (blocking)."""
    present = set(repo.list_versions(model))
    return {v: e for v, e in read_lineage(repo.model_dir(model)).items() if v not in present}
