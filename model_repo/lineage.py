"""A version's lineage, from its manifest: where it came from and what it passed.

What the gateway shows for every served version (``parameters.lineage`` in its metadata)
and names on every answer (the lineage id in a response header): the version's content id,
its parent, the data it was trained on, its gate metrics, and the shadow and canary results
recorded since.
"""

from __future__ import annotations

from typing import Any

from .manifest import Manifest


def lineage_id(manifest: Manifest) -> str:
    """``model:version:sha256-prefix``: names the exact bytes that answered."""
    return f"{manifest.model}:{manifest.version}:{manifest.sha256[:12]}"


def lineage(manifest: Manifest) -> dict[str, Any]:
    out: dict[str, Any] = {"id": lineage_id(manifest), "created_at": manifest.created_at,
                           "parent_version": manifest.parent_version, "data_digest": manifest.data_digest,
                           "status": manifest.status}
    if manifest.metrics:
        out["gate"] = manifest.metrics
    training = manifest.extra.get("training")
    if isinstance(training, dict):
        out["training"] = {k: training[k] for k in ("world_size", "mode", "examples", "data_sources") if k in training}
    for key in ("shadow", "canary"):
        report = manifest.extra.get(key)
        if isinstance(report, dict):
            out[key] = {k: report.get(k) for k in ("status", "passed", "state", "reason", "decided_at") if k in report}
    return out
