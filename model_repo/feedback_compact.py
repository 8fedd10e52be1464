"""Retention for a model's feedback store: recent rows kept whole, older ones thinned to a replay reservoir.

A :class:`FeedbackPolicy` bounds the store in rows, bytes and age. :func:`compact_feedback`
(blocking: the gateway's leader runs it off the event loop; ``tunegate models gc`` by hand)
does nothing while the store is within its bounds. Beyond them it keeps the newest rows whole
(at most ``recent_rows``, within the byte bound, none older than ``max_age_seconds``) and
thins every older row — earlier reservoir rows included — to a reservoir of at most
``reservoir_rows``, balanced over eras and classes (:mod:`model_repo.feedback_sample`), so
every past distribution keeps a voice. It compacts down to ``low_water`` of the bounds, so
the next compaction waits for real growth or ageing.

**What changes on disk.** The shards that held an older row (a prefix of the numbered shards,
never the newest one: numbering continues from it) are replaced by at most two shards: the
reservoir (``TGFBRPL1`` magic, named after its first row) and the recent rows those shards
also held (named after its first row). Every row keeps its sequence number, so a compacted
store still satisfies "each shard's rows are numbered below the next shard's name", and a
manifest's data snapshot of rows since removed stays a valid record of what was read.

**Crash safety.** The new shards are written under temporary names and fsynced without the
store's lock (appends go on); the swap — journal, renames, removals — runs under it and takes
milliseconds (:mod:`model_repo.feedback_journal`). A ``kill -9`` before the journal leaves the
old shards (the store as it was, every row present once; the temporary files are ignored and
removed next time); after it, whoever reads next finishes the swap, so the kept rows are
present once and the dropped ones gone. A second compaction waits on ``.compact.lock``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import feedback_journal as journal
from .durable import exclusive_lock, fsync_path
from .feedback_format import (REPLAY_MAGIC, SEQ_KEY, SHARD_MAGIC, encode_record, first_sequence, list_shards,
                              read_shard, record_problem, shard_name)
from .feedback_sample import DEFAULT_ERAS, RowMeta, balanced_sample, row_metadata

COMPACT_LOCK = ".compact.lock"
GiB = 1 << 30
DAY = 86400.0


@dataclass(frozen=True)
class FeedbackPolicy:
    """A model's bounds on its feedback store (see the module doc)."""

    max_rows: int = 1_000_000
    max_bytes: int = GiB
    max_age_seconds: float = 30 * DAY
    recent_rows: int = 200_000
    reservoir_rows: int = 50_000
    eras: int = DEFAULT_ERAS
    low_water: float = 0.8  # compact down to this share of every bound (rows, bytes, recent rows, age)

    def __post_init__(self) -> None:
        if min(self.max_rows, self.max_bytes, self.recent_rows, self.eras) < 1 or self.reservoir_rows < 0:
            raise ValueError(f"feedback policy bounds must be positive: {self}")
        if self.max_age_seconds <= 0 or not 0 < self.low_water <= 1:
            raise ValueError(f"feedback policy: max_age_seconds > 0 and 0 < low_water <= 1: {self}")

    @classmethod
    def from_settings(cls, settings: Any) -> FeedbackPolicy:
        """From anything with the loop settings' field names (model_repo imports no gateway)."""
        return cls(max_rows=int(settings.feedback_max_rows), max_bytes=int(settings.feedback_max_bytes),
                   max_age_seconds=float(settings.feedback_max_age_seconds),
                   recent_rows=int(settings.feedback_recent_rows),
                   reservoir_rows=int(settings.replay_reservoir_rows))


def compact_feedback(directory: Path, policy: FeedbackPolicy, *, now: float | None = None,
                     on_step: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Apply ``policy`` to the store in ``directory`` (blocking); a report of what it did.
    ``on_step`` is called with each step's name ("planned", "written", "journaled", "renamed",
    "removed"): the crash tests kill the process there."""
    directory = Path(directory)
    started = time.perf_counter()
    now = time.time() if now is None else now
    report: dict[str, Any] = {"compacted": False, "policy": asdict(policy)}
    if not directory.is_dir():
        return {**report, "reason": "no store"}
    with _compaction_lock(directory) as held:
        if not held:
            return {**report, "reason": "another compaction is running"}
        journal.settle(directory)  # a dead compaction's committed swap first
        report["leftovers_removed"] = journal.remove_leftovers(directory)
        report.update(_compact(directory, policy, now, on_step))
    report["seconds"] = round(time.perf_counter() - started, 3)
    return report


@contextlib.contextmanager
def _compaction_lock(directory: Path) -> Iterator[bool]:
    with open(directory / COMPACT_LOCK, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _compact(directory: Path, policy: FeedbackPolicy, now: float, on_step) -> dict[str, Any]:
    generation = journal.generation(directory)
    shards = [p for p in list_shards(directory) if first_sequence(p) > 0]
    size = sum(p.stat().st_size for p in shards)
    if not shards:
        return {"reason": "no numbered shard", "bytes_before": size}
    rows = row_metadata(shards)
    over = _over(rows, size, policy, now)
    if over is None:
        return {"reason": "within the policy", "rows_before": len(rows), "bytes_before": size}
    plan = _plan(rows, policy, now, newest_first=first_sequence(shards[-1]))
    if plan is None and _seal(directory):
        # The rows beyond the bounds were all in the shard appends go to: appends now go to a
        # new one, and the old one can be rewritten like any other.
        shards = [p for p in list_shards(directory) if first_sequence(p) > 0]
        rows = row_metadata(shards)
        plan = _plan(rows, policy, now, newest_first=first_sequence(shards[-1]))
    if plan is None:
        return {"reason": f"{over}, but every row beyond it is in the newest shard", "rows_before": len(rows)}
    cutoff, reservoir = plan
    replaced = [p for i, p in enumerate(shards[:-1]) if i <= _last_replaced(rows, cutoff)]
    _step(on_step, "planned")
    writes = _write_outputs(directory, replaced, cutoff, reservoir, generation, on_step)
    swapped = _swap(directory, generation, writes, replaced, len(reservoir), cutoff, now, on_step)
    after = [p for p in list_shards(directory) if first_sequence(p) > 0]
    return {"compacted": swapped, "reason": over if swapped else "another writer swapped first",
            "rows_before": len(rows), "bytes_before": size, "cutoff": cutoff,
            "recent_rows": int(np.count_nonzero(rows.seq > cutoff)), "replay_rows": len(reservoir),
            "rows_after": int(np.count_nonzero(rows.seq > cutoff)) + len(reservoir),
            "bytes_after": sum(p.stat().st_size for p in after if p.exists()),
            "shards_replaced": len(replaced), "generation": journal.generation(directory)}


def _seal(directory: Path) -> bool:
    """Start a new, empty newest shard (named after the next number, under the store's lock,
    as a writer would) so that the one appends went to can be compacted. False when the
    newest shard holds no record: there is nothing to seal."""
    from .feedback import last_sequence

    with exclusive_lock(directory):
        newest = [p for p in list_shards(directory) if first_sequence(p) > 0][-1]
        if newest.stat().st_size <= len(SHARD_MAGIC):
            return False
        path = directory / shard_name(last_sequence(directory) + 1)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, SHARD_MAGIC)
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_path(directory)
    return True


def _over(rows: RowMeta, size: int, policy: FeedbackPolicy, now: float) -> str | None:
    """Which bound the store is beyond, or None."""
    if len(rows) > policy.max_rows:
        return f"{len(rows)} rows > {policy.max_rows}"
    if size > policy.max_bytes:
        return f"{size} bytes > {policy.max_bytes}"
    recent = ~rows.replay
    if np.count_nonzero(recent) > policy.recent_rows:
        return f"{np.count_nonzero(recent)} recent rows > {policy.recent_rows}"
    if recent.any() and rows.timestamp[recent].min() < now - policy.max_age_seconds:
        return f"rows older than {policy.max_age_seconds:.0f} s"
    return None


def _plan(rows: RowMeta, policy: FeedbackPolicy, now: float, newest_first: int) -> tuple[int, np.ndarray] | None:
    """The cutoff (rows numbered above it stay whole) and the reservoir's rows (numbers)."""
    # A reservoir row mostly lands in a record of its own: it costs a one-row record.
    row_bytes = max(rows.one_row_bytes, 1.0)
    reservoir_cap = min(policy.reservoir_rows, int(policy.low_water * policy.max_bytes / 2 / row_bytes))
    # Every bound is cut to low_water of itself, so the next compaction waits for real growth
    # (or real ageing) instead of following every append.
    recent_cap = max(0, min(int(policy.low_water * policy.recent_rows),
                            int(policy.low_water * policy.max_rows) - reservoir_cap))
    bytes_cap = policy.low_water * policy.max_bytes - reservoir_cap * row_bytes
    recent = ~rows.replay
    seq, nbytes, stamp = rows.seq[recent], rows.nbytes[recent], rows.timestamp[recent]
    order = np.argsort(-seq, kind="stable")  # newest first
    seq, nbytes, stamp = seq[order], nbytes[order], stamp[order]
    fits = (np.arange(1, seq.size + 1) <= recent_cap) & (np.cumsum(nbytes) <= bytes_cap)
    fits &= np.minimum.accumulate(stamp) >= now - policy.low_water * policy.max_age_seconds
    fits |= seq >= newest_first  # the newest shard is never rewritten
    first_out = np.flatnonzero(~fits)
    if not first_out.size:
        return None
    cutoff = int(seq[first_out[0]])
    old = rows.seq <= cutoff
    rng = np.random.default_rng([cutoff, len(rows)])
    chosen = balanced_sample(rows.seq[old], rows.label_class[old], reservoir_cap, eras=policy.eras, rng=rng)
    return cutoff, np.sort(rows.seq[old][chosen])


def _last_replaced(rows: RowMeta, cutoff: int) -> int:
    """The last shard (index) that holds a row at or below the cutoff, or a reservoir row."""
    held = (rows.seq <= cutoff) | rows.replay
    return int(rows.shard[held].max()) if held.any() else -1


def _write_outputs(directory: Path, replaced: list[Path], cutoff: int, reservoir: np.ndarray,
                   generation: int, on_step) -> list[dict[str, str]]:
    """The reservoir and the replaced shards' recent rows, each in a fsynced temporary file."""
    outputs = {"replay": _Output(directory, f"{generation + 1}-{os.getpid()}-replay", REPLAY_MAGIC),
               "recent": _Output(directory, f"{generation + 1}-{os.getpid()}-recent", SHARD_MAGIC)}
    try:
        for path in replaced:
            for _, timestamp, arrays in read_shard(path, 0).records:
                if SEQ_KEY not in arrays or record_problem(arrays) is not None:
                    continue
                seq = arrays[SEQ_KEY]
                outputs["replay"].add(arrays, np.isin(seq, reservoir), timestamp)
                outputs["recent"].add(arrays, seq > cutoff, timestamp)
            _step(on_step, "writing")
        writes = [w for out in outputs.values() if (w := out.close()) is not None]
    except BaseException:
        for out in outputs.values():
            out.discard()
        raise
    fsync_path(directory)
    return writes


class _Output:
    """One compacted shard being written under a temporary name."""

    def __init__(self, directory: Path, tag: str, magic: bytes) -> None:
        self.tmp = directory / f"{journal.TMP_PREFIX}{tag}.tmp"
        self.magic, self.fd, self.first = magic, None, None

    def add(self, arrays: dict[str, np.ndarray], keep: np.ndarray, timestamp: float) -> None:
        if not keep.any():
            return
        if self.fd is None:
            self.fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(self.fd, self.magic)
            self.first = int(arrays[SEQ_KEY][keep][0])
        subset = arrays if keep.all() else {k: a[keep] for k, a in arrays.items()}
        os.write(self.fd, encode_record(subset, timestamp))

    def close(self) -> dict[str, str] | None:
        if self.fd is None:
            return None
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = None
        return {"tmp": self.tmp.name, "name": shard_name(self.first)}

    def discard(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.tmp.unlink(missing_ok=True)


def _swap(directory: Path, generation: int, writes: list[dict[str, str]], replaced: list[Path],
          replay_rows: int, cutoff: int, now: float, on_step) -> bool:
    """Commit and swap under the store's lock (appends wait milliseconds); False, and the
    temporary files removed, if the shards changed since they were read."""
    _step(on_step, "written")
    with exclusive_lock(directory):
        if journal.generation(directory) != generation or not all(p.exists() for p in replaced):
            for write in writes:
                (directory / write["tmp"]).unlink(missing_ok=True)
            return False
        state = {"generation": generation + 1, "replay_rows": replay_rows, "cutoff": cutoff,
                 "compacted_at": now,
                 "replay_shard": next((w["name"] for w in writes if "-replay" in w["tmp"]), None)}
        journal.commit(directory, writes, [p.name for p in replaced], state)
        _step(on_step, "journaled")
        journal.recover(directory, on_step)
    return True


def store_rows_by_kind(directory: Path, scan=None) -> dict[str, int]:
    """``{"recent": n, "replay": m}``: rows of the store by kind, for the gauge. The reservoir's
    count is the last compaction's; the total is ``scan``'s (a :class:`FeedbackScan` the caller
    keeps, read incrementally) or, without one, a full count."""
    from .feedback_read import FeedbackScan

    directory = Path(directory)
    scan = scan or FeedbackScan(directory)
    scan.update()
    state = journal.read_state(directory)
    replay_shard = state.get("replay_shard")
    replay = int(state.get("replay_rows", 0)) if replay_shard and (directory / replay_shard).exists() else 0
    return {"recent": max(0, scan.rows - replay), "replay": replay}


def _step(on_step, name: str) -> None:
    if on_step is not None:
        on_step(name)
