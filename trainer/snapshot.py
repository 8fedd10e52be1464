"""The data snapshot a fine-tune records in the manifest it publishes (and in the ledger's
attempts when it publishes nothing): exactly what it saw. The loop reads it back
(``model_repo.ledger``) to tell new feedback from used, and held-back rows from trained ones."""

from __future__ import annotations

from typing import Any

from model_repo.ledger import held_out_ranges

from .data import Dataset, Part


def data_snapshot(train: Dataset, val: Dataset) -> dict[str, Any]:
    """``{"feedback": {...} | None, "other_stores": [...], "files": {spec: digest}}``."""
    parts: dict[str, Part] = {}
    for part in [*(train.parts or []), *(val.parts or [])]:
        parts.setdefault(part.spec, part)
    own = [p for p in parts.values() if p.own]
    feedback = None
    if own:
        seqs = [d.seq[d.seq >= 0] for d in (train, val) if d.seq is not None]
        first = [int(s.min()) for s in seqs if s.size] or [0]
        last = [int(s.max()) for s in seqs if s.size] or [0]
        through = own[0].through if own[0].through is not None else max(last)
        feedback = {"store": str(own[0].store), "first": min(first), "through": through,
                    "rows": int(sum(s.size for s in seqs)),
                    "held_out": held_out_ranges(val.seq[val.seq >= 0]) if val.seq is not None else []}
        if own[0].mix is not None:
            # A bounded job: recent rows after ``mix.recent.after``, a replay sample of older
            # ones (by era), and the golden set (trainer.mix).
            feedback["mix"] = own[0].mix
    return {
        "feedback": feedback,
        "other_stores": [{"store": str(p.store), "rows": p.rows, "digest": p.digest}
                         for p in parts.values() if p.store is not None and not p.own],
        "files": {p.spec: p.digest for p in parts.values() if p.store is None},
    }


def attempt(model_dir, snapshot: dict[str, Any], outcome: str, base_version: int, message: str) -> None:
    """Record, in the ledger, a job that read the store but published nothing."""
    from model_repo.ledger import record_attempt

    feedback = snapshot.get("feedback") or {}
    record_attempt(model_dir, through=feedback.get("through"), outcome=outcome, base_version=base_version,
                   message=message)
