"""Samples of the feedback store that give every past distribution a voice.

The *replay* sample (the reservoir compaction keeps, and the older rows a fine-tune rehearses)
is uniform over the store's history and balanced over classes: the rows' sequence range is
cut into ``eras`` of equal width (numbers grow with arrival, so an era is a stretch of time),
and rows are taken round-robin — one per era in turn, and within an era one per class in turn
— so a distribution that lasted one cycle keeps as many rows as one that lasted ten, and a
rare class as many as a common one, until either runs out (its share then goes to the others).

:func:`row_metadata` reads what choosing needs (numbers, labels, times, bytes) a shard at a
time, so memory stays at one shard whatever the store's size.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import feedback_journal as journal
from .feedback_format import (LABEL_KEY, SEQ_KEY, encode_record, first_sequence, list_shards, read_shard,
                              record_problem, schema, shard_kind)

DEFAULT_ERAS = 16


@dataclass
class RowMeta:
    """Per usable row, in shard order: what choosing a sample needs, never the inputs."""

    seq: np.ndarray  # int64
    timestamp: np.ndarray  # float64
    label_class: np.ndarray  # int64: the class (argmax of a target row; 0 for regression)
    nbytes: np.ndarray  # float64: the row's share of its record's bytes
    shard: np.ndarray  # int64: index into ``shards``
    replay: np.ndarray  # bool: from a reservoir shard
    shards: list[Path]
    one_row_bytes: float = 0.0  # a record of one row: what a reservoir row costs at most

    def __len__(self) -> int:
        return int(self.seq.shape[0])


def label_classes(labels: np.ndarray) -> np.ndarray:
    """A class per row: the id of class labels, the argmax of a target vector, else 0."""
    if labels.ndim == 1 and labels.dtype.kind in "biu":
        return labels.astype(np.int64)
    if labels.ndim == 2 and labels.shape[1] > 1:
        return np.argmax(labels, axis=1).astype(np.int64)
    return np.zeros(labels.shape[0], np.int64)


def record_extents(parsed_records: list, end: int) -> list[int]:
    """Each record's bytes on disk (from its offset to the next record's, or the parse end)."""
    offsets = [offset for offset, _, _ in parsed_records] + [end]
    return [b - a for a, b in zip(offsets, offsets[1:])]


def row_metadata(shards: Iterable[Path]) -> RowMeta:
    """The usable rows of ``shards`` (numbered ones; the store's most common schema only).
    Raises FileNotFoundError when a swap removed a shard meanwhile: the caller reads again."""
    shards = [s for s in shards if first_sequence(s) > 0]
    columns: dict[str, list[np.ndarray]] = {k: [] for k in ("seq", "ts", "cls", "nbytes", "shard", "replay")}
    kinds: list[tuple] = []
    tally: dict[tuple, int] = {}
    one_row = 0.0
    for index, path in enumerate(shards):
        replay = shard_kind(path) == "replay"
        parsed = read_shard(path, 0)
        for (offset, timestamp, arrays), size in zip(parsed.records, record_extents(parsed.records, parsed.end)):
            if SEQ_KEY not in arrays or record_problem(arrays) is not None:
                continue  # quarantined by every reader too
            rows = int(arrays[LABEL_KEY].shape[0])
            if not one_row:
                one_row = float(len(encode_record({k: a[:1] for k, a in arrays.items()}, timestamp)))
            kind = schema(arrays)
            tally[kind] = tally.get(kind, 0) + rows
            kinds += [kind] * rows
            columns["seq"].append(arrays[SEQ_KEY].astype(np.int64))
            columns["ts"].append(np.full(rows, timestamp, np.float64))
            columns["cls"].append(label_classes(arrays[LABEL_KEY]))
            columns["nbytes"].append(np.full(rows, size / rows, np.float64))
            columns["shard"].append(np.full(rows, index, np.int64))
            columns["replay"].append(np.full(rows, replay, bool))
    if not kinds:
        empty = np.zeros((0,), np.int64)
        return RowMeta(empty, empty.astype(np.float64), empty, empty.astype(np.float64), empty,
                       empty.astype(bool), shards)
    winner = max(tally, key=tally.__getitem__)
    keep = np.array([k == winner for k in kinds])
    cat = {k: np.concatenate(v)[keep] for k, v in columns.items()}
    return RowMeta(cat["seq"], cat["ts"], cat["cls"], cat["nbytes"], cat["shard"], cat["replay"], shards, one_row)


def balanced_sample(seq: np.ndarray, label_class: np.ndarray, n: int, *, eras: int = DEFAULT_ERAS,
                    rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n`` rows (all if fewer), round-robin over eras of the sequence range and
    over classes within each era (see the module doc)."""
    total = int(seq.shape[0])
    if n >= total:
        return np.arange(total)
    if n <= 0:
        return np.zeros((0,), np.int64)
    edges = np.linspace(seq.min(), seq.max() + 1, max(1, eras) + 1)
    era = np.clip(np.searchsorted(edges, seq, side="right") - 1, 0, len(edges) - 2)
    noise = rng.random(total)
    # The rank of each row within its (era, class): a random order of the rows of each pair.
    order = np.lexsort((noise, label_class, era))
    changes = (np.diff(era[order]) != 0) | (np.diff(label_class[order]) != 0)
    starts = np.r_[0, np.flatnonzero(changes) + 1]
    rank_in_class = np.arange(total) - np.repeat(starts, np.diff(np.r_[starts, total]))
    within = np.empty(total, np.int64)
    within[order] = rank_in_class
    # Within an era, classes take turns: order by (rank in class, a random class order).
    era_order = np.lexsort((rng.random(total), within, era))
    era_starts = np.r_[0, np.flatnonzero(np.diff(era[era_order])) + 1]
    rank_in_era = np.empty(total, np.int64)
    rank_in_era[era_order] = np.arange(total) - np.repeat(era_starts, np.diff(np.r_[era_starts, total]))
    # Eras take turns: the first row of every era, then the second, …
    chosen = np.lexsort((rng.random(total), rank_in_era))[:n]
    return np.sort(chosen)


def _spread(count: int) -> list[int]:
    """0..count-1 in an order that covers the range evenly at every prefix (van der Corput)."""
    def radical(i: int) -> float:
        value, base = 0.0, 0.5
        while i:
            value, i, base = value + base * (i & 1), i >> 1, base / 2
        return value

    return sorted(range(count), key=lambda i: radical(i)) if count else []


def choose_replay(directory: str | os.PathLike[str], *, through: int, rows: int, seed: int,
                  eras: int = DEFAULT_ERAS, pool_factor: int = 4) -> np.ndarray:
    """Sequence numbers of a balanced sample of ``rows`` rows numbered up to ``through``:
    from the reservoir and the older shards, reading shards spread evenly over the store only
    until ``pool_factor`` times ``rows`` are in the pool (never the whole store when it is large)."""
    directory = Path(directory)
    if rows <= 0 or through <= 0:
        return np.zeros((0,), np.int64)
    for _ in range(10):
        seen = journal.settle(directory)
        try:
            chosen = _choose_once(directory, through, rows, seed, eras, pool_factor)
        except FileNotFoundError:
            continue
        if journal.unchanged(directory, seen):
            return chosen
    return np.zeros((0,), np.int64)  # the store kept changing: train without replay this time


def _choose_once(directory: Path, through: int, rows: int, seed: int, eras: int, pool_factor: int) -> np.ndarray:
    shards = [p for p in list_shards(directory) if 0 < first_sequence(p) <= through]
    replay = [p for p in shards if shard_kind(p) == "replay"]
    others = [p for p in shards if p not in replay]
    parts = [row_metadata([p]) for p in replay]
    pooled = sum(int(np.count_nonzero(m.seq <= through)) for m in parts)
    for index in _spread(len(others)):
        if pooled >= pool_factor * rows:
            break
        parts.append(row_metadata([others[index]]))
        pooled += int(np.count_nonzero(parts[-1].seq <= through))
    if not parts:
        return np.zeros((0,), np.int64)
    seq = np.concatenate([m.seq for m in parts])
    classes = np.concatenate([m.label_class for m in parts])
    inside = seq <= through
    seq, classes = seq[inside], classes[inside]
    if not seq.size:
        return seq
    chosen = balanced_sample(seq, classes, rows, eras=eras, rng=np.random.default_rng([seed, through]))
    return np.sort(seq[chosen])


def era_summary(seqs: np.ndarray, eras: int = DEFAULT_ERAS) -> list[list[int]]:
    """``[first, last, rows]`` per non-empty era of ``seqs``: a short record of a replay sample."""
    seqs = np.sort(np.asarray(seqs, np.int64))
    if not seqs.size:
        return []
    edges = np.linspace(seqs[0], seqs[-1] + 1, eras + 1)
    era = np.clip(np.searchsorted(edges, seqs, side="right") - 1, 0, eras - 1)
    return [[int(seqs[era == e].min()), int(seqs[era == e].max()), int(np.count_nonzero(era == e))]
            for e in np.unique(era)]
