"""What the loop reads back from a version's manifest (all blocking): when it was
published, and any shadow or canary decision already written there (by the leader, another
process, or ``tunegate models promote|rollback``)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from model_repo import Repository, RepositoryError
from model_repo.canary_state import PROMOTED, REJECTED, ROLLED_BACK


def published_at(repo: Repository, model: str, version: int) -> float | None:
    """When ``version`` was published, as a Unix time; None if unknown."""
    try:
        stamp = repo.read_manifest(model, version).created_at
        return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except (RepositoryError, ValueError, AttributeError):
        return None


def shadow_report(repo: Repository, model: str, version: int) -> dict[str, Any] | None:
    """The shadow evaluation already recorded for ``version``, if any."""
    try:
        report = repo.read_manifest(model, version).extra.get("shadow")
    except RepositoryError:
        return None
    return report if isinstance(report, dict) else None


def decision_report(repo: Repository, model: str, version: int) -> dict[str, Any] | None:
    """The canary decision report in ``version``'s manifest, if any."""
    try:
        report = repo.read_manifest(model, version).extra.get("canary")
    except RepositoryError:
        return None
    return report if isinstance(report, dict) and report.get("state") else None


def decision(repo: Repository, model: str, version: int) -> tuple[str, str] | None:
    """(state, reason) of a decision already in the version's manifest, or None."""
    try:
        manifest = repo.read_manifest(model, version)
    except RepositoryError:
        return None  # gone or unreadable: writing the decision says what is wrong
    report = manifest.extra.get("canary")
    report = report if isinstance(report, dict) else {}
    if manifest.status == REJECTED:
        return ROLLED_BACK, str(report.get("reason") or "rejected in its manifest")
    if manifest.extra.get("canary"):
        return str(report.get("state") or PROMOTED), str(report.get("reason") or "decided in its manifest")
    return None
