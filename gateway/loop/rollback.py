"""Rolling a promotion back: a switch to the version it replaced, which is still loaded.

For ``rollback_window_seconds`` after a canary is promoted, the stable version it replaced
stays loaded but unrouted (``model_repo.canary_state``: the plan's ``warm`` versions). A
rollback in that time marks the promoted version ``rejected`` in its manifest (it is never
routed again, on any process), and the plan's newest version is the old stable once more:
already loaded, so the next request goes there with nothing to load. After the window the
old stable is unloaded; a rollback then is refused with the reason.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from model_repo import RepositoryError
from model_repo.canary_state import PROMOTED, REJECTED, ROLLED_BACK, decided_since

from ..core.errors import BadRequest

if TYPE_CHECKING:
    from ..core.registry import Registry


async def undo_promotion(registry: Registry, model: str, window: float, instance: str) -> dict[str, Any]:
    record = registry.record(model)  # 404/503 for an unknown or unloaded model
    if not record.serving:
        raise BadRequest(f"model {model!r} has no canary in progress and no version serving")
    newest = next(reversed(record.serving))
    manifest = await asyncio.to_thread(_manifest, registry, model, newest)
    report = manifest.extra.get("canary") if manifest is not None else None
    if not isinstance(report, dict) or report.get("state") != PROMOTED:
        raise BadRequest(f"model {model!r} has no canary in progress, and its newest version {newest} was not "
                         "promoted from one: nothing to roll back")
    previous = report.get("stable_version")
    if previous not in record.serving or decided_since(report) >= window:
        raise BadRequest(f"model {model!r}: version {newest} was promoted over version {previous} more than "
                         f"rollback_window_seconds ({window:g} s) ago and {previous} is no longer loaded; "
                         f"publish or pin the version to serve instead")
    undone = {**report, "state": ROLLED_BACK, "reason": "promotion rolled back by hand", "manual": True,
              "promoted_at": report.get("decided_at"), "decided_by": instance,
              "decided_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    written = await asyncio.to_thread(registry.repo.update_manifest_if, model, newest,
                                      lambda m: m.status != REJECTED, status=REJECTED, canary=undone)
    if written is None:
        raise BadRequest(f"model {model!r}: version {newest} is already rejected")
    await registry.reconcile(model)  # the old stable is loaded: this is the switch
    return undone


def _manifest(registry: Registry, model: str, version: int):
    try:
        return registry.repo.read_manifest(model, version)
    except RepositoryError:
        return None
