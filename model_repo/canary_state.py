"""The one serving truth: which of a model's versions are stable, the pending canary, warm
for rollback, rejected or retired — from the config's version policy *and* the manifests'
decisions, answered by :func:`read_plan` (and :func:`base_version`, the version a fine-tune
starts from).

The rule lives here, beside the repository, so that every actor agrees on it: the
gateway's registry (what to load and split traffic for), its canary controller and job
manager, the dashboard, ``tunegate models list|show|promote|rollback`` and ``tunegate
finetune`` (which cannot import the gateway), whatever launcher runs it.

- a version whose manifest ``status`` is ``rejected`` never serves again;
- a version published by a fine-tune job (its manifest has ``training``) with no
  ``canary`` decision yet is *pending*: while it is the newest, it serves beside the
  stable versions (the ones the version policy picks among the decided ones);
- promotion writes ``canary: {"state": "promoted", ...}`` into its manifest; rollback
  writes ``status: "rejected"`` and the same report with ``"state": "rolled_back"``.
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass, field
from typing import Any

from .config import ModelConfig
from .errors import RepositoryError, VersionNotFound
from .manifest import Manifest
from .policy import available_versions
from .repository import Repository

REJECTED = "rejected"  # manifest status of a rolled-back version
CANARY, PROMOTED, ROLLED_BACK = "canary", "promoted", "rolled_back"  # states of a canary report


def is_pending(manifest: Manifest) -> bool:
    """A fine-tuned version nobody has decided on yet."""
    return bool(manifest.extra.get("training")) and not manifest.extra.get("canary")


@dataclass(frozen=True)
class ServingPlan:
    """What the repository says should serve, with canaries on (``canary`` is None when
    no canary is pending or there is no stable version to compare it with)."""

    serving: list[int]
    canary: int | None
    rejected: list[int] = field(default_factory=list)
    warm: list[int] = field(default_factory=list)  # loaded, not routed: the stable before a recent promotion
    retired: list[int] = field(default_factory=list)  # on disk, decided, but the version policy serves them no more
    # Every version's manifest as the plan read it (None: none readable), for callers that
    # need more of them (the gateway's lineage) without reading them again.
    manifests: dict[int, Manifest | None] = field(default_factory=dict, repr=False, compare=False)

    @property
    def stable(self) -> list[int]:
        return [v for v in self.serving if v != self.canary]

    @property
    def pending(self) -> list[int]:
        """Fine-tuned versions nobody has decided on, newer than the stable one (an older one
        can never be a canary again: it is retired)."""
        newest = max(self.stable, default=0)
        return [v for v, m in self.manifests.items()
                if v > newest and m is not None and m.status != REJECTED and is_pending(m)]


def read_plan(repo: Repository, model: str, config: ModelConfig, canary: bool = True,
              warm_seconds: float = 0.0) -> ServingPlan:
    """The plan for ``model`` (blocking: reads every manifest).

    Rejected versions are left out before the version policy applies, so after a rollback
    the policy's ``latest 1`` is the stable version again. For ``warm_seconds`` after the
    newest serving version was promoted, the stable version it replaced stays loaded
    (``warm``), so rolling the promotion back is a switch, not a load."""
    manifests = _manifests(repo, model)
    rejected = [v for v, m in manifests.items() if m is not None and m.status == REJECTED]
    eligible = [v for v in manifests if v not in rejected]
    wanted = available_versions(config, eligible)
    warm = _warm(manifests, wanted, rejected, warm_seconds)
    plan = ServingPlan(wanted, None, rejected, warm, manifests=manifests)
    newest = wanted[-1] if wanted else None
    if canary and newest is not None and manifests[newest] is not None and is_pending(manifests[newest]):
        # Undecided canaries never count as stable (a second fine-tuned version must not make
        # the first one the stable side of its comparison).
        stable = available_versions(config, [v for v in eligible
                                             if manifests[v] is None or not is_pending(manifests[v])])
        if stable:  # else nothing to compare with: the first version just serves
            plan = ServingPlan(sorted(set(stable) | {newest}), newest, rejected, manifests=manifests)
    kept = set(plan.serving) | set(plan.warm) | set(rejected)
    return ServingPlan(plan.serving, plan.canary, rejected, plan.warm,
                       [v for v in eligible if v not in kept and v not in plan.pending], manifests)


def stable_version(plan: ServingPlan, model: str) -> int:
    """The newest stable version: what unpinned requests go to outside a canary's share,
    and what a fine-tune starts from."""
    if not plan.stable:
        raise VersionNotFound(f"model {model!r} has no stable version to serve or fine-tune")
    return plan.stable[-1]


def base_version(repo: Repository, model: str, version: int | None = None) -> int:
    """The version a fine-tune of ``model`` starts from (blocking): the current stable one,
    or ``version`` unless it was rejected. (An undecided version may be named: with canaries
    off the gateway serves it as its newest.)"""
    plan = read_plan(repo, model, repo.read_config(model))
    stable = stable_version(plan, model)
    if version is None:
        return stable
    if version not in plan.manifests:
        raise VersionNotFound(f"version {version} of model {model!r} does not exist; its stable version is {stable}")
    if version in plan.rejected:
        raise VersionNotFound(f"version {version} of model {model!r} was rejected (rolled back); its stable "
                              f"version is {stable}: fine-tune that (leave out --version)")
    return version



def _warm(manifests: dict[int, Manifest | None], wanted: list[int], rejected: list[int],
          seconds: float) -> list[int]:
    if not wanted or seconds <= 0 or manifests.get(wanted[-1]) is None:
        return []
    report = manifests[wanted[-1]].extra.get("canary")
    if not isinstance(report, dict) or report.get("state") != PROMOTED:
        return []
    previous = report.get("stable_version")
    if not isinstance(previous, int) or previous not in manifests or previous in rejected or previous in wanted:
        return []
    return [previous] if decided_since(report) < seconds else []


def decided_since(report: dict[str, Any]) -> float:
    """Seconds since the decision ``report`` records (infinite if it has no time)."""
    try:
        stamp = time.strptime(str(report["decided_at"]), "%Y-%m-%dT%H:%M:%SZ")
    except (KeyError, ValueError):
        return float("inf")
    return time.time() - calendar.timegm(stamp)


def plan_versions(repo: Repository, model: str, config: ModelConfig,
                  canary: bool) -> tuple[list[int], int | None]:
    """The versions to serve and the pending canary among them (blocking: reads manifests)."""
    plan = read_plan(repo, model, config, canary)
    return plan.serving, plan.canary


def decision_report(version: int, stable: int | None, outcome: str, reason: str) -> dict[str, Any]:
    """The ``canary`` entry a decision taken outside the gateway writes into the manifest
    (the gateway's own adds the window's evidence)."""
    return {"version": version, "stable_version": stable, "state": outcome, "reason": reason,
            "manual": True, "decided_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _manifests(repo: Repository, model: str) -> dict[int, Manifest | None]:
    manifests: dict[int, Manifest | None] = {}
    for v in repo.list_versions(model):
        try:
            manifests[v] = repo.read_manifest(model, v)
        except RepositoryError:
            manifests[v] = None  # e.g. a hand-made version without a manifest: an ordinary one
    return manifests
