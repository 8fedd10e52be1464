"""Bounds for the files the loop leaves on the repository besides versions and feedback, and
the disk each part of a model takes.

Every function here is blocking, idempotent and safe beside a live gateway: it removes only
what no process reads any more (a finished job's directory, a decided canary's evidence, the
files of a process gone for ``stale_seconds``), so the leader's retention duty and ``tunegate
models gc`` may run at any time, and a crash in the middle leaves nothing half-readable (each
removal is one unlink or one directory of a thing already dead).

The layouts are the gateway's (``gateway/loop``: evidence.py, drift_files.py,
leader_requests.py, capture_log.py, jobs/local.py); model_repo may not import the gateway, so
the names are repeated here and a gateway test checks that both agree.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

from .canary_state import read_plan
from .feedback import FEEDBACK_DIR
from .jobs import RESULT_DIR
from .repository import Repository
from .retention import JOBS_RECORD, LOOP_DIR, RetentionPolicy, gc_versions

JOBS_DIR = ".jobs"  # <repo>/.jobs/<job id>/: the local and Spark launchers' job directories
CAPTURE_DIR = ".capture"
TRAINING_DIRS = (".training", ".checkpoints", RESULT_DIR)
EVIDENCE_RE = re.compile(r"^canary-v(\d+)$")
DRIFT_DIR = "drift"
REQUESTS_DIR = "requests"
_SEGMENT_RE = re.compile(r"^seg-(\d{8})\.cap$")
_CLAIMS_RE = re.compile(r"^(seg-\d{8})\.(labelled|claims)$")
PARTS = ("versions", "feedback", "capture", "jobs", "training", "evidence", "other")


def _age(path: Path, now: float) -> float:
    try:
        return now - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _remove(path: Path, dry_run: bool) -> None:
    if dry_run:
        return
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# ---------------------------------------------------------------------- jobs
def job_model(directory: Path) -> str | None:
    """The model a job directory belongs to (its spec or process record says)."""
    for name in ("spec.json", "process.json", "status.json"):
        try:
            model = json.loads((directory / name).read_bytes()).get("model")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(model, str):
            return model
    return None


def _job_running(directory: Path, running_id: str | None) -> bool:
    if directory.name == running_id:
        return True
    if (directory / "status.json").exists() or (directory / "exit_code").exists():
        return False
    try:
        pid = int(json.loads((directory / "process.json").read_bytes())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return _age(directory, time.time()) < 3600  # being started: no record yet
    return Path(f"/proc/{pid}").exists()  # another host's job: its pid is unknown here, kept too


def gc_jobs(jobs_dir: Path, model: str, keep: int, *, running_id: str | None = None,
            dry_run: bool = False) -> list[Path]:
    """Remove ``model``'s finished job directories but the newest ``keep``; running ones stay."""
    try:
        entries = [Path(e.path) for e in os.scandir(jobs_dir) if e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []
    mine = [d for d in entries if job_model(d) == model and not _job_running(d, running_id)]
    mine.sort(key=lambda d: (d.stat().st_mtime, d.name))
    doomed = mine[:-keep] if keep > 0 else mine
    for directory in doomed:
        _remove(directory, dry_run)
    return doomed


def gc_results(model_dir: Path, keep: int, *, dry_run: bool = False) -> list[Path]:
    """Cluster jobs' outcome files (``<model>/.finetune/<job>.json``, one per job): the newest
    ``keep`` stay. ``.training`` and ``.checkpoints`` are rewritten by every job, so bounded."""
    try:
        files = sorted((p for p in (model_dir / RESULT_DIR).iterdir() if p.is_file()),
                       key=lambda p: (p.stat().st_mtime, p.name))
    except (FileNotFoundError, NotADirectoryError):
        return []
    doomed = files[:-keep] if keep > 0 else files
    for path in doomed:
        _remove(path, dry_run)
    return doomed


# ------------------------------------------------------------------ the loop's files
def gc_evidence(repo: Repository, model: str, *, dry_run: bool = False) -> list[Path]:
    """Canary evidence directories of versions that are decided (or gone): the leader removes
    them at its decision, but a follower's last write, a decision by the command line or a
    leader killed in between leaves them."""
    loop_dir = repo.model_dir(model) / LOOP_DIR
    try:
        names = [e.name for e in os.scandir(loop_dir) if e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []
    plan = read_plan(repo, model, repo.read_config(model))
    live = set(plan.pending) | ({plan.canary} if plan.canary is not None else set())
    doomed = []
    for name in names:
        match = EVIDENCE_RE.match(name)
        if match and int(match.group(1)) not in live:
            doomed.append(loop_dir / name)
            _remove(loop_dir / name, dry_run)
    return doomed


def _stale_files(directory: Path, stale_seconds: float, now: float, pattern: str = "*.json") -> list[Path]:
    try:
        return [p for p in directory.glob(pattern) if p.is_file() and _age(p, now) > stale_seconds]
    except OSError:
        return []


def gc_drift(model_dir: Path, stale_seconds: float, *, dry_run: bool = False) -> list[Path]:
    """Drift counts of processes that have not written for ``stale_seconds`` (their readers
    drop them only while drift is on and someone reads)."""
    doomed = _stale_files(model_dir / LOOP_DIR / DRIFT_DIR, stale_seconds, time.time())
    for path in doomed:
        _remove(path, dry_run)
    return doomed


def gc_requests(repo_root: Path, stale_seconds: float, *, dry_run: bool = False) -> list[Path]:
    """Leader requests and answers nobody took for ``stale_seconds`` (an asker that timed out
    leaves its answer; a request seconds old is still being waited for)."""
    doomed = _stale_files(Path(repo_root) / LOOP_DIR / REQUESTS_DIR, stale_seconds, time.time())
    doomed += _stale_files(Path(repo_root) / LOOP_DIR / REQUESTS_DIR, stale_seconds, time.time(), ".*.tmp")
    for path in doomed:
        _remove(path, dry_run)
    return doomed


def gc_capture(model_dir: Path, stale_seconds: float, *, dry_run: bool = False) -> list[Path]:
    """Capture directories of instances gone for ``stale_seconds`` (their live peers remove
    them too, but only while capture is on), and claims whose segment is gone."""
    root, now = model_dir / CAPTURE_DIR, time.time()
    doomed: list[Path] = []
    try:
        entries = list(os.scandir(root))
    except (FileNotFoundError, NotADirectoryError):
        return []
    for entry in entries:
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False) and not _CLAIMS_RE.match(entry.name):
            youngest = min([_age(path, now)] + [_age(s, now) for s in path.glob("seg-*.cap")])
            if youngest > stale_seconds:
                doomed.append(path)
            else:
                doomed += _orphan_claims(path)
        elif _SEGMENT_RE.match(entry.name) and _age(path, now) > stale_seconds:
            doomed.append(path)  # written before instance directories existed
    doomed += _orphan_claims(root)
    for path in doomed:
        _remove(path, dry_run)
    return doomed


def _orphan_claims(directory: Path) -> list[Path]:
    out = []
    for path in directory.iterdir():
        match = _CLAIMS_RE.match(path.name)
        if match and not (directory / f"{match.group(1)}.cap").exists():
            out.append(path)
    return out


# ------------------------------------------------------------------------ all of it
def gc_model(repo: Repository, model: str, policy: RetentionPolicy, *, jobs_dir: Path | None = None,
             running_job: str | None = None, dry_run: bool = False) -> dict[str, list]:
    """Apply ``policy`` to everything ``model`` has on the repository but its feedback (whose
    compaction has its own policy): what was removed (or would be, ``dry_run``), by kind."""
    model_dir = repo.model_dir(model)
    versions = gc_versions(repo, model, policy.keep_versions, dry_run=dry_run)
    removed: dict[str, list] = {"versions": versions.removed}
    removed["jobs"] = gc_jobs(jobs_dir or repo.root / JOBS_DIR, model, policy.keep_jobs,
                              running_id=running_job or _running_job(model_dir), dry_run=dry_run)
    removed["training"] = gc_results(model_dir, policy.keep_jobs, dry_run=dry_run)
    removed["evidence"] = gc_evidence(repo, model, dry_run=dry_run)
    removed["drift"] = gc_drift(model_dir, policy.stale_seconds, dry_run=dry_run)
    removed["capture"] = gc_capture(model_dir, policy.stale_seconds, dry_run=dry_run)
    return removed


def _running_job(model_dir: Path) -> str | None:
    try:
        running = json.loads((model_dir / LOOP_DIR / JOBS_RECORD).read_bytes()).get("running") or {}
        return str(running["job_id"])
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return None


# ---------------------------------------------------------------------- disk use
def _tree(path: Path) -> tuple[int, int]:
    """Bytes and files under ``path`` (a file counts itself)."""
    if path.is_file():
        return path.stat().st_size, 1
    size = files = 0
    for dirpath, _dirs, names in os.walk(path):
        for name in names:
            try:
                size += os.lstat(os.path.join(dirpath, name)).st_size
                files += 1
            except FileNotFoundError:
                continue  # removed while we walked
    return size, files


def _part_of(name: str) -> str:
    if name.isdigit():
        return "versions"
    if name == FEEDBACK_DIR:
        return "feedback"
    if name == CAPTURE_DIR:
        return "capture"
    if name in TRAINING_DIRS:
        return "training"
    return "other"


def disk_usage(repo: Repository, model: str, jobs_dir: Path | None = None) -> dict[str, dict[str, int]]:
    """Bytes and files of ``model`` by part (:data:`PARTS`); ``jobs`` counts the job
    directories under ``jobs_dir`` (default ``<repo>/.jobs``) that belong to the model."""
    usage = {part: {"bytes": 0, "files": 0} for part in PARTS}

    def add(part: str, counted: tuple[int, int]) -> None:
        usage[part]["bytes"] += counted[0]
        usage[part]["files"] += counted[1]

    model_dir = repo.model_dir(model)
    for entry in _scandir(model_dir):
        path = Path(entry.path)
        if entry.name == LOOP_DIR and entry.is_dir(follow_symlinks=False):
            for inner in _scandir(path):
                add("evidence" if EVIDENCE_RE.match(inner.name) else "other", _tree(Path(inner.path)))
        else:
            add(_part_of(entry.name), _tree(path))
    for entry in _scandir(jobs_dir or repo.root / JOBS_DIR):
        if entry.is_dir(follow_symlinks=False) and job_model(Path(entry.path)) == model:
            add("jobs", _tree(Path(entry.path)))
    return usage


def _scandir(path: Path) -> Iterable[os.DirEntry]:
    try:
        return list(os.scandir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []
