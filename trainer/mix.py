"""What a fine-tune trains on from its model's feedback store: a bounded mix, not the whole store.

With ``--max-rows N`` (the default) a job on ``feedback:`` reads

- **recent** rows: those numbered after its base version's data snapshot
  (``model_repo.ledger.trained_through``; every row when the base has none), the newest of
  them when they are more than the budget allows;
- **replay** rows: a sample of the older rows — the compacted reservoir and older shards —
  balanced over eras and classes (``model_repo.feedback_sample.choose_replay``), about
  ``--replay-fraction`` of the mix, so the model rehearses every earlier distribution;
- the **anchor** set, ``<repo>/<model>/anchor.npz`` or ``--golden``, when there is one
  (features ``x`` or the input's name, labels ``label`` or ``y``, as shadow reads its golden
  set). Not ``golden.npz``: shadow's golden set must stay a check the candidate never trained
  on (measured: a job that rehearsed it passed a candidate trained on random labels, 99.0%
  vs 99.75% on it, which the golden check alone had stopped).

Rank 0 plans the mix (:func:`plan_mix`) and broadcasts it; every rank then reads exactly those
rows (``read_feedback(after=…)`` and ``read_feedback(sequences=…)``), never the whole store.
The manifest's data snapshot records the mix (``trainer.snapshot``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model_repo.feedback_sample import choose_replay, era_summary

from .features import Features, InputNames, take

GOLDEN_FILE = "anchor.npz"  # rehearsed by every job; see the module doc for why not golden.npz


@dataclass
class FeedbackMix:
    """The rows of the model's own store a job reads (plain values: rank 0 broadcasts it)."""

    after: int  # recent rows: after < seq <= the job's pinned ``through``
    replay: list[int] = field(default_factory=list)  # sequence numbers of the replay sample
    base_through: int | None = None  # the base version's snapshot
    golden: str | None = None  # the anchor set's path
    golden_rows: int = 0  # rows of it to train on (a seeded sample when the file holds more)

    def record(self, recent_rows: int, through: int | None, golden_digest: str | None) -> dict:
        """The mix as the manifest's data snapshot records it."""
        replay = np.asarray(self.replay, np.int64)
        return {
            "recent": {"after": self.after, "through": through, "rows": recent_rows},
            "replay": {"rows": int(replay.size), "eras": era_summary(replay),
                       "digest": "sha256:" + hashlib.sha256(replay.tobytes()).hexdigest()},
            "golden": None if self.golden is None else {"path": self.golden, "rows": self.golden_rows,
                                                       "digest": golden_digest},
            "base_through": self.base_through,
        }


def golden_path(repo_root: str | Path, model: str, given: str | None, disabled: bool) -> Path | None:
    if disabled:
        return None
    path = Path(given) if given else Path(repo_root) / model / GOLDEN_FILE
    return path if path.is_file() else None


def golden_size(path: Path | None) -> int:
    if path is None:
        return 0
    with np.load(path, allow_pickle=False) as npz:
        label = "label" if "label" in npz.files else "y"
        return int(npz[label].shape[0]) if label in npz.files else 0


def plan_mix(store: Path, *, through: int, base_through: int | None, max_rows: int, replay_fraction: float,
             golden: Path | None, seed: int) -> FeedbackMix:
    """Rank 0's choice of the rows (see the module doc); reads only a bounded part of the store."""
    golden_rows = min(golden_size(golden), int(max_rows * replay_fraction))
    budget = max_rows - golden_rows
    recent_cap = max(1, int(round(budget * (1.0 - replay_fraction))))
    after = max(base_through or 0, through - recent_cap)
    # Numbers are unique, so (after, through] holds at most through - after rows (fewer
    # where a crash or a quarantined record left a gap): a bound that needs no read.
    recent = max(0, through - after)
    if recent:
        share = replay_fraction / (1.0 - replay_fraction) if replay_fraction < 1 else float(budget)
        replay_rows = min(budget - recent, int(round(recent * share)))
    else:
        replay_rows = int(round(budget * replay_fraction))  # nothing new: rehearse only
    replay = choose_replay(store, through=after, rows=max(0, replay_rows), seed=seed) if after > 0 else []
    return FeedbackMix(after=after, replay=[int(s) for s in replay], base_through=base_through,
                       golden=None if golden is None else str(golden), golden_rows=golden_rows)


def load_golden(path: Path, rows: int, features: list[str] | None, seed: int) -> tuple[Features, np.ndarray]:
    """``rows`` of the golden set (all of it when it holds no more), features and labels; for a
    model with several inputs (``features`` an :class:`InputNames`) one array per input name."""
    with np.load(path, allow_pickle=False) as npz:
        keys = set(npz.files)
        label = "label" if "label" in keys else "y"
        if isinstance(features, InputNames):
            names = list(features) if set(features) <= keys else []
        else:
            names = [n for n in (features or []) if n in keys] or (["x"] if "x" in keys else sorted(keys - {label})[:1])
        if label not in keys or not names:
            from .errors import DataError

            expected = f"{list(features)}" if isinstance(features, InputNames) else "'x' (or the input's name)"
            raise DataError(f"golden set {path}: expected features {expected} and labels "
                            f"'label' or 'y', found {sorted(keys)}")
        x = {n: npz[n] for n in names} if isinstance(features, InputNames) else npz[names[0]]
        y = npz[label]
    if rows < y.shape[0]:
        keep = np.sort(np.random.default_rng(seed).permutation(y.shape[0])[:rows])
        x, y = take(x, keep), y[keep]
    return x, y
