"""Whether another fine-tune can help now: new rows are needed, not enough.

A deployment whose labels outpace its jobs would otherwise start the next job the moment the
last one is decided, forever, and once the model fits most would be rejected. So an
automatic trigger also needs, from the ledger (``model_repo.ledger.outcomes``: every
actor's fine-tunes, after a restart too):

- **pacing**: ``trigger_min_interval_seconds`` since the last fine-tune ended, and after
  fine-tunes that did not help (rejected, not promoted, failed) a back-off of
  ``trigger_backoff_seconds``, doubled for each in a row, up to ``trigger_backoff_max_seconds``;
- **evidence** (``samples`` and ``schedule`` triggers): the stable version is less accurate on
  the new labelled rows than on its own held-out data by ``trigger_min_accuracy_drop``, or
  than ``trigger_accuracy_target`` when one is set.
  The check runs the stable version on at most :data:`EVIDENCE_ROWS` of the newest rows,
  off the request path, and again only when more rows came in.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np
from model_repo import Repository, RepositoryError
from model_repo.feedback import feedback_dir, read_feedback
from model_repo.ledger import outcomes

from ...core.registry import ServedVersion
from ..settings import LoopSettings
from ..shadow import accuracy, predictions

EVIDENCE_ROWS = 2000


def pacing(history: list[tuple[float, bool]], settings: LoopSettings, now: float) -> str | None:
    """Why an automatic job must wait now, or None (``history``: newest first)."""
    if not history:
        return None
    since = now - history[0][0]
    if since < settings.trigger_min_interval_seconds:
        return f"the last fine-tune ended {since:.0f} s ago (trigger_min_interval_seconds " \
               f"{settings.trigger_min_interval_seconds:g})"
    misses = next((i for i, (_, helped) in enumerate(history) if helped), len(history))
    if misses:
        wait = min(settings.trigger_backoff_seconds * 2 ** (misses - 1), settings.trigger_backoff_max_seconds)
        if since < wait:
            return f"backing off {wait:.0f} s after {misses} fine-tune(s) in a row that did not help"
    return None


@dataclass
class Evidence:
    worse: bool
    why: str
    rows: int  # new rows when it was judged


class ValueCheck:
    """The leader's view of whether a job can help, per model (see the module doc)."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self._evidence: dict[tuple[str, int], Evidence] = {}  # (model, stable version) -> last judgement

    async def wait_reason(self, model: str, settings: LoopSettings) -> str | None:
        history = await asyncio.to_thread(outcomes, self.repo, model)
        return pacing(history, settings, time.time())

    async def evidence(self, model: str, stable: ServedVersion, baseline: int, new_rows: int,
                       settings: LoopSettings) -> Evidence:
        """Is ``stable`` worse on the rows after ``baseline`` than it was validated at?"""
        drop, target = settings.trigger_min_accuracy_drop, settings.trigger_accuracy_target
        reference = await asyncio.to_thread(self._validated_accuracy, model, stable.version)
        if (drop is None or reference is None) and target is None:
            return Evidence(True, "new rows alone decide", new_rows)
        key = (model, stable.version)
        last = self._evidence.get(key)
        if last is not None and new_rows < last.rows + max(1, settings.trigger_samples // 4):
            return last  # judged on nearly these rows already
        data = await asyncio.to_thread(read_feedback, feedback_dir(self.repo.root, model),
                                       after=max(baseline, 0))
        names = [meta.name for meta in stable.signature.inputs]
        labels = data.labels[-EVIDENCE_ROWS:]
        if not len(labels) or labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) \
                or not set(names) <= set(data.inputs):
            found = Evidence(True, "new rows alone decide (no class labels to judge on)", new_rows)
        else:
            scores, _ = await predictions(stable, {n: data.inputs[n][-EVIDENCE_ROWS:] for n in names})
            acc = accuracy(scores, labels.astype(np.int64))
            dropped = drop is not None and reference is not None and acc <= reference - drop
            worse = dropped or (target is not None and acc < target)
            against = [f"{reference:.1%} on its held-out data"] if reference is not None else []
            against += [f"target {target:.0%}"] if target is not None else []
            found = Evidence(worse, f"version {stable.version} is {acc:.1%} accurate on {len(labels)} new rows "
                             f"vs {', '.join(against)}", new_rows)
        self._evidence = {k: v for k, v in self._evidence.items() if k[0] != model} | {key: found}
        return found

    def _validated_accuracy(self, model: str, version: int) -> float | None:
        try:
            metrics = self.repo.read_manifest(model, version).metrics or {}
        except RepositoryError:
            return None
        after = metrics.get("after") if isinstance(metrics, dict) else None
        value = after.get("accuracy") if isinstance(after, dict) else None
        return float(value) if isinstance(value, (int, float)) else None
