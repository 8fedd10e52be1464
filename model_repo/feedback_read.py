"""Reading the feedback store (:mod:`model_repo.feedback`): whole, or by sequence range.

Nothing in a shard can take the reader down. A record that is damaged anywhere but the tail
(it fails its checksum or is garbage with a good record after it, its payload does not
decode, its arrays disagree on rows), a file named like a shard without the magic, a record
in a numbered shard without sequence numbers, and a record whose schema differs from the
store's (the schema holding the most rows, the earliest on a tie) are *quarantined*:
skipped, counted and their reasons kept in :class:`FeedbackData`, while every other record
is read. :class:`FeedbackScan` counts the same quarantine incrementally, reading only what
was appended since it last looked (the gateway's metric and its fine-tune trigger).

``after``/``through`` select rows by sequence number (``after < seq <= through``); a shard
whose successor starts at or below ``after + 1`` holds nothing after ``after`` and is not
opened (:func:`shards_for`).

A compaction (:mod:`model_repo.feedback_compact`) may swap shards while a read goes on: a
read first finishes a swap a dead compaction left, and reads again if a swap began meanwhile
(:mod:`model_repo.feedback_journal`), so it never counts a row twice nor misses one the
compaction kept.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import feedback_journal as journal
from .errors import FeedbackError
from .feedback_format import (INPUT_PREFIX, LABEL_KEY, SEQ_KEY, describe, first_sequence, list_shards, read_shard,
                              record_problem, row_sequences, schema)

MAX_REASONS = 20  # reasons kept per read; the count is always exact
MAX_READS = 10  # a swap takes milliseconds; ten in a row mean something else is wrong


@dataclass
class FeedbackData:
    inputs: dict[str, np.ndarray]  # tensor name -> rows, concatenated over records
    labels: np.ndarray
    timestamps: np.ndarray  # float64 seconds, one per row
    records: int
    torn_records: int  # incomplete tails skipped (left by crashes)
    quarantined: int = 0  # damaged or foreign records (and files) skipped; see the module doc
    quarantine_reasons: list[str] = field(default_factory=list)  # the first MAX_REASONS
    sequences: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))  # one per row
    shards_read: list[str] = field(default_factory=list)  # the shards opened, by name

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def shards_for(directory: str | os.PathLike[str], after: int | None = None,
               through: int | None = None) -> list[Path]:
    """The shards that may hold rows with ``after < seq <= through`` (None: no bound)."""
    shards = list_shards(directory)
    firsts = [first_sequence(p) for p in shards]
    chosen = []
    for i, path in enumerate(shards):
        # Every row of a shard is numbered below the next shard's name (0 in an unnumbered one).
        below = 1 if firsts[i] == 0 else firsts[i + 1] if i + 1 < len(shards) else None
        if after is not None and below is not None and below - 1 <= after:
            continue
        if through is not None and firsts[i] > through:
            break
        chosen.append(path)
    return chosen


def _holding(shards: list[Path], wanted: np.ndarray | None) -> list[Path]:
    """The shards that may hold one of ``wanted`` (sorted numbers): each holds numbers from
    its name to below the next one's."""
    if wanted is None or not shards:
        return shards
    if wanted.size == 0:
        return []
    firsts = np.array([first_sequence(p) for p in shards], np.int64)
    owner = np.searchsorted(firsts, wanted, side="right") - 1
    chosen = set(owner[owner >= 0].tolist()) | {i for i, f in enumerate(firsts) if f == 0}
    return [shards[i] for i in sorted(chosen)]


def _problem(arrays: dict[str, np.ndarray], numbered: bool) -> str | None:
    if numbered and SEQ_KEY not in arrays:
        return "a record without sequence numbers in a numbered shard"
    return record_problem(arrays)


def _records(directory: str | os.PathLike[str], after: int | None, through: int | None,
             quarantine: list[str], read: list[str],
             wanted: np.ndarray | None = None) -> Iterator[tuple[str, float, dict[str, np.ndarray]]]:
    """(where, timestamp, arrays cut to the range) for each usable record; ("", 0, {}) for
    each torn tail."""
    for shard in _holding(shards_for(directory, after, through), wanted):
        read.append(shard.name)
        numbered = first_sequence(shard) > 0
        parsed = read_shard(shard, 0)
        quarantine += [f"{shard.name} byte {offset}: {why}" for offset, why in parsed.bad]
        if parsed.torn:
            yield "", 0.0, {}
        for offset, timestamp, arrays in parsed.records:
            problem = _problem(arrays, numbered)
            if problem is not None:
                quarantine.append(f"{shard.name} byte {offset}: {problem}")
                continue
            seq = row_sequences(arrays)
            keep = np.ones(seq.shape[0], bool)
            if after is not None:
                keep &= seq > after
            if through is not None:
                keep &= seq <= through
            if wanted is not None:
                keep &= np.isin(seq, wanted)
            where = f"{shard.name} byte {offset}"
            if keep.all():
                yield where, timestamp, {**arrays, SEQ_KEY: seq}
            elif keep.any():
                yield where, timestamp, {k: a[keep] for k, a in {**arrays, SEQ_KEY: seq}.items()}


def read_feedback(directory: str | os.PathLike[str], *, after: int | None = None,
                  through: int | None = None, sequences: np.ndarray | None = None) -> FeedbackData:
    """Every usable row in ``directory`` with ``after < seq <= through`` (and, given
    ``sequences``, only those numbers), in sequence order. Never raises for a damaged
    record (see the module doc)."""
    wanted = None if sequences is None else np.unique(np.asarray(sequences, np.int64))
    for _ in range(MAX_READS):
        seen = journal.settle(Path(directory))
        try:
            data = _read_once(directory, after, through, wanted)
        except FileNotFoundError:
            continue  # a swap removed a shard under us
        if journal.unchanged(Path(directory), seen):
            return data
    raise FeedbackError(f"{directory}: the store changed under {MAX_READS} reads in a row")


def _read_once(directory: str | os.PathLike[str], after: int | None, through: int | None,
               wanted: np.ndarray | None) -> FeedbackData:
    quarantine: list[str] = []
    opened: list[str] = []
    found: list[tuple[str, tuple, float, dict[str, np.ndarray]]] = []
    tally = _Tally()
    torn = 0
    for where, timestamp, arrays in _records(directory, after, through, quarantine, opened, wanted):
        if not arrays:
            torn += 1
            continue
        kind = schema(arrays)
        tally.add(kind, arrays[LABEL_KEY].shape[0])
        found.append((where, kind, timestamp, arrays))
    winner = tally.winner()
    kept = []
    for where, kind, timestamp, arrays in found:
        if kind == winner:
            kept.append((timestamp, arrays))
        else:
            quarantine.append(f"{where}: {describe(kind)} differs from the store's {describe(winner)}")
    if not kept:
        return FeedbackData({}, np.zeros((0,), np.float32), np.zeros((0,), np.float64), 0, torn,
                            len(quarantine), quarantine[:MAX_REASONS], shards_read=opened)
    names = [k for k in kept[0][1] if k.startswith(INPUT_PREFIX)]
    return FeedbackData(
        {name[len(INPUT_PREFIX):]: np.concatenate([a[name] for _, a in kept]) for name in names},
        np.concatenate([a[LABEL_KEY] for _, a in kept]),
        np.concatenate([np.full(a[LABEL_KEY].shape[0], t, np.float64) for t, a in kept]),
        len(kept), torn, len(quarantine), quarantine[:MAX_REASONS],
        np.concatenate([a[SEQ_KEY] for _, a in kept]), opened)


class FeedbackScan:
    """Counts what :func:`read_feedback` would quarantine now, and the rows after a
    sequence number, reading only the bytes appended since the last :meth:`update`
    (shards only grow). One caller at a time."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._restart()

    def _restart(self) -> None:
        self._generation = journal.generation(self.directory)
        self._next: dict[str, int] = {}  # shard -> where its next read starts; -1: foreign
        self._bad = 0
        self._tally = _Tally()
        self.reasons: list[str] = []  # the latest MAX_REASONS
        # Per usable record, in sequence order: its last number, rows and schema.
        self._last: list[int] = []
        self._rows: list[int] = []
        self._kinds: list[tuple] = []

    @property
    def quarantined(self) -> int:
        return self._bad + self._tally.outside_winner()

    @property
    def rows(self) -> int:
        """Examples :func:`read_feedback` would return now (the store's schema's rows)."""
        return self._tally.winner_rows()

    @property
    def last_sequence(self) -> int:
        return self._last[-1] if self._last else 0

    def rows_after(self, after: int) -> int:
        """Rows of the store's schema numbered above ``after``, as of the last update."""
        winner = self._tally.winner()
        start = bisect.bisect_right(self._last, after)
        return sum(min(rows, last - after) for last, rows, kind in
                   zip(self._last[start:], self._rows[start:], self._kinds[start:]) if kind == winner)

    def update(self) -> int:
        for _ in range(MAX_READS):
            if journal.settle(self.directory) != self._generation:
                self._restart()  # a compaction rewrote shards (perhaps under the same names)
            try:
                self._update_once()
            except FileNotFoundError:
                self._generation = -1  # a swap removed a shard under us: count again
                continue
            if journal.unchanged(self.directory, self._generation):
                break
        return self.quarantined

    def _update_once(self) -> None:
        shards = list_shards(self.directory)
        if not self._next.keys() <= {p.name for p in shards}:
            self._restart()  # a shard was removed: what it held no longer counts
        for shard in shards:
            start = self._next.get(shard.name, 0)
            if start < 0:
                continue
            parsed = read_shard(shard, start)
            self._next[shard.name] = parsed.end
            problems = list(parsed.bad)
            for offset, _, arrays in parsed.records:
                problem = _problem(arrays, first_sequence(shard) > 0)
                if problem is None:
                    self._count(arrays)
                else:
                    problems.append((offset, problem))
            self._bad += len(problems)
            self.reasons = (self.reasons + [f"{shard.name} byte {o}: {w}" for o, w in problems])[-MAX_REASONS:]

    def _count(self, arrays: dict[str, np.ndarray]) -> None:
        kind, rows = schema(arrays), int(arrays[LABEL_KEY].shape[0])
        self._tally.add(kind, rows)
        self._last.append(max(int(row_sequences(arrays)[-1]), self.last_sequence))
        self._rows.append(rows)
        self._kinds.append(kind)


class _Tally:
    """Rows and records per schema; the store's schema is the one with the most rows."""

    def __init__(self) -> None:
        self._counts: dict[tuple, list[int]] = {}  # schema -> [rows, records, order first seen]

    def add(self, kind: tuple, rows: int) -> None:
        entry = self._counts.setdefault(kind, [0, 0, len(self._counts)])
        entry[0] += rows
        entry[1] += 1

    def winner(self) -> tuple | None:
        return max(self._counts, key=lambda s: (self._counts[s][0], -self._counts[s][2]), default=None)

    def winner_rows(self) -> int:
        winner = self.winner()
        return 0 if winner is None else self._counts[winner][0]

    def outside_winner(self) -> int:
        winner = self.winner()
        return sum(entry[1] for kind, entry in self._counts.items() if kind != winner)
