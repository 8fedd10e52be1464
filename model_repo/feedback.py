"""The feedback store: labelled examples the gateway captures and the trainer learns from.

numpy only, so the gateway can import it without TensorFlow. One directory per model
(by default ``<repo>/<model>/.feedback/``; hidden, so Triton and ``list_versions`` ignore it)
holding append-only shards ``shard-NNNNNNNN.tgfb`` of checksummed records (their bytes:
``model_repo.feedback_format``).

Inputs are stored under their tensor names (``"in:<name>"``), labels as ``"label"``; each
record holds a batch (first axis) of one or more examples. A record's *schema* is the names,
dtypes and per-row shapes of its arrays; the gateway stores labels in one canonical form per
model (``gateway.labels``), so the records of one model share one schema.

Durability: a record is one ``write`` on an ``O_APPEND`` descriptor followed by ``fsync``,
so once :meth:`FeedbackWriter.append` returns, the record survives a crash. A crash during a
write can leave a torn record at the end of a shard only: a writer never appends to a shard
it did not create (it starts a new one when opened), so readers stop at a shard's torn tail
(bytes after the last record that hold no complete record) and skip it.

Nothing in a shard can take the reader down. A record that is damaged anywhere else (it fails
its checksum or is garbage with a good record after it, its payload does not decode, its arrays
disagree on rows), a file named like a shard without the magic, and a record whose schema
differs from the store's (the schema holding the most rows, the earliest on a tie) are
*quarantined*: skipped, counted and their reasons kept in :class:`FeedbackData`, while every
other record is read. :class:`FeedbackScan` counts the same quarantine
incrementally, reading only what was appended since it last looked (the gateway's metric).
Shards rotate when the next record would take one past ``max_shard_bytes``.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .durable import exclusive_lock, fsync_path
from .errors import RepositoryError
from .feedback_format import INPUT_PREFIX, LABEL_KEY, SHARD_MAGIC, encode_record, read_shard

__all__ = ["DEFAULT_MAX_SHARD_BYTES", "FEEDBACK_DIR", "LABEL_KEY", "SHARD_MAGIC", "FeedbackCorrupt",
           "FeedbackData", "FeedbackError", "FeedbackScan", "FeedbackWriter", "feedback_dir",
           "list_shards", "read_feedback", "snapshot"]

FEEDBACK_DIR = ".feedback"
SHARD_SUFFIX = ".tgfb"
_SHARD_RE = re.compile(r"^shard-(\d{8})\.tgfb$")
DEFAULT_MAX_SHARD_BYTES = 64 << 20


class FeedbackError(RepositoryError):
    """A feedback record that cannot be stored (bad arrays): the client's fault."""

    status = 400


class FeedbackCorrupt(RepositoryError):
    """The store cannot give what was asked: shards of a snapshot are gone. (Damaged records
    are quarantined, never raised.)"""

    status = 500


def feedback_dir(repo_root: str | os.PathLike[str], model: str) -> Path:
    """Where the gateway writes, and the trainer reads, ``model``'s feedback by default."""
    return Path(repo_root) / model / FEEDBACK_DIR


def _check_record(inputs: Mapping[str, np.ndarray], labels: np.ndarray) -> dict[str, np.ndarray]:
    if not inputs:
        raise FeedbackError("a feedback record needs at least one input")
    labels = np.asarray(labels)
    if labels.ndim == 0 or labels.shape[0] == 0:
        raise FeedbackError("labels must have a batch dimension of one or more rows")
    arrays = {}
    for name, value in inputs.items():
        array = np.asarray(value)
        if array.dtype.hasobject:
            raise FeedbackError(f"input {name!r}: object arrays cannot be stored")
        if array.ndim == 0 or array.shape[0] != labels.shape[0]:
            raise FeedbackError(
                f"input {name!r} has shape {array.shape} but labels have {labels.shape[0]} rows")
        arrays[INPUT_PREFIX + name] = array
    arrays[LABEL_KEY] = labels
    problem = _record_problem(arrays)  # what a reader would quarantine is never written
    if problem is not None:
        raise FeedbackError(problem)
    return arrays


def _record_problem(arrays: Mapping[str, np.ndarray]) -> str | None:
    """Why a decoded record cannot be used, or None."""
    inputs = [k for k in arrays if k.startswith(INPUT_PREFIX)]
    unknown = sorted(set(arrays) - set(inputs) - {LABEL_KEY})
    if LABEL_KEY not in arrays or not inputs or unknown:
        return f"arrays {sorted(arrays)} are not inputs ('in:<name>') and one 'label'"
    if any(a.ndim == 0 for a in arrays.values()) or len({a.shape[0] for a in arrays.values()}) != 1:
        return f"arrays disagree on rows: {_describe(_schema(arrays, rows=True))}"
    labels = arrays[LABEL_KEY]
    if labels.shape[0] == 0:
        return "a record without rows"
    if labels.dtype.kind not in "biuf":
        return f"labels of dtype {labels.dtype} are not numeric"
    if labels.dtype.kind == "f" and not np.isfinite(labels).all():
        return "labels that are not finite (NaN or infinity)"
    return None


def _schema(arrays: Mapping[str, np.ndarray], rows: bool = False) -> tuple:
    """Names, dtypes and per-row shapes (whole shapes with ``rows``)."""
    return tuple(sorted((k, a.dtype.str, a.shape if rows else a.shape[1:]) for k, a in arrays.items()))


def _describe(schema: tuple) -> str:
    return ", ".join(f"{name} {np.dtype(dtype).name}{list(shape)}" for name, dtype, shape in schema)


# ------------------------------------------------------------------- writing
class FeedbackWriter:
    """Appends records to a new shard of ``directory``; safe across threads and processes."""

    def __init__(self, directory: str | os.PathLike[str], *,
                 max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> None:
        if max_shard_bytes < len(SHARD_MAGIC) + 64:
            raise ValueError(f"max_shard_bytes too small: {max_shard_bytes}")
        self.directory = Path(directory)
        self.max_shard_bytes = max_shard_bytes
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._size = 0
        self.shard: Path | None = None

    def append(self, inputs: Mapping[str, np.ndarray], labels: np.ndarray,
               timestamp: float | None = None) -> None:
        """Store one record durably; returns only after it is fsynced."""
        record = encode_record(_check_record(inputs, labels), time.time() if timestamp is None else timestamp)
        with self._lock:
            if self._fd is None or (self._size > len(SHARD_MAGIC)
                                    and self._size + len(record) > self.max_shard_bytes):
                self._open_new_shard()
            assert self._fd is not None
            os.write(self._fd, record)
            os.fsync(self._fd)
            self._size += len(record)

    def _open_new_shard(self) -> None:
        self._close_fd()
        # The number is chosen under an exclusive lock and the file created with O_EXCL,
        # so two writers (two gateway workers) never share a shard.
        with exclusive_lock(self.directory):
            numbers = [int(m.group(1)) for p in self.directory.iterdir()
                       if (m := _SHARD_RE.match(p.name))]
            path = self.directory / f"shard-{max(numbers, default=0) + 1:08d}{SHARD_SUFFIX}"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        os.write(fd, SHARD_MAGIC)
        os.fsync(fd)
        fsync_path(self.directory)  # the new name itself must survive a crash
        self._fd, self._size, self.shard = fd, len(SHARD_MAGIC), path

    def close(self) -> None:
        with self._lock:
            self._close_fd()

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FeedbackWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()




# ------------------------------------------------------------------- reading
MAX_REASONS = 20  # reasons kept per read; the count is always exact


@dataclass
class FeedbackData:
    inputs: dict[str, np.ndarray]  # tensor name -> rows, concatenated over records
    labels: np.ndarray
    timestamps: np.ndarray  # float64 seconds, one per row
    records: int
    torn_records: int  # incomplete tails skipped (left by crashes)
    quarantined: int = 0  # damaged or foreign records (and files) skipped; see the module doc
    quarantine_reasons: list[str] = field(default_factory=list)  # the first MAX_REASONS

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def list_shards(directory: str | os.PathLike[str]) -> list[Path]:
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _SHARD_RE.match(p.name))


def snapshot(directory: str | os.PathLike[str]) -> dict[str, int]:
    """The store as it is now: each shard's name and size. Shards only grow, so reading up to
    these sizes gives the same records later, however much was appended meanwhile; a
    distributed job takes one snapshot and every rank reads exactly that."""
    return {p.name: p.stat().st_size for p in list_shards(directory)}


def read_feedback(directory: str | os.PathLike[str], at: Mapping[str, int] | None = None) -> FeedbackData:
    """Every usable record in ``directory``, oldest shard first; with ``at`` (a
    :func:`snapshot`), only what the store held then. Never raises for a damaged record
    (see the module doc); raises :class:`FeedbackCorrupt` only when a snapshot's shard is gone."""
    shards = list_shards(directory)
    if at is not None:
        missing = sorted(set(at) - {p.name for p in shards})
        if missing:
            raise FeedbackCorrupt(f"{directory}: shards {missing} of the snapshot are gone")
        shards = [p for p in shards if p.name in at]
    quarantine: list[str] = []
    found: list[tuple[str, tuple, float, dict[str, np.ndarray]]] = []  # where, schema, time, arrays
    tally = _Tally()
    torn = 0
    for shard in shards:
        parsed = read_shard(shard, 0, None if at is None else at[shard.name])
        torn += parsed.torn
        quarantine += [f"{shard.name} byte {offset}: {why}" for offset, why in parsed.bad]
        for offset, timestamp, arrays in parsed.records:
            where = f"{shard.name} byte {offset}"
            problem = _record_problem(arrays)
            if problem is not None:
                quarantine.append(f"{where}: {problem}")
                continue
            schema = _schema(arrays)
            tally.add(schema, arrays[LABEL_KEY].shape[0])
            found.append((where, schema, timestamp, arrays))
    store_schema = tally.winner()
    kept = []
    for where, schema, timestamp, arrays in found:
        if schema == store_schema:
            kept.append((timestamp, arrays))
        else:
            quarantine.append(f"{where}: {_describe(schema)} differs from the store's {_describe(store_schema)}")
    if not kept:
        return FeedbackData({}, np.zeros((0,), np.float32), np.zeros((0,), np.float64), 0, torn,
                            len(quarantine), quarantine[:MAX_REASONS])
    names = [k for k in kept[0][1] if k.startswith(INPUT_PREFIX)]
    return FeedbackData(
        {name[len(INPUT_PREFIX):]: np.concatenate([a[name] for _, a in kept]) for name in names},
        np.concatenate([a[LABEL_KEY] for _, a in kept]),
        np.concatenate([np.full(a[LABEL_KEY].shape[0], t, np.float64) for t, a in kept]),
        len(kept), torn, len(quarantine), quarantine[:MAX_REASONS])


class FeedbackScan:
    """Counts what :func:`read_feedback` would quarantine now, reading only the bytes
    appended since the last :meth:`update` (shards only grow). One caller at a time."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._restart()

    def _restart(self) -> None:
        self._next: dict[str, int] = {}  # shard -> where its next read starts; -1: foreign
        self._bad = 0
        self._tally = _Tally()
        self.reasons: list[str] = []  # the latest MAX_REASONS

    @property
    def quarantined(self) -> int:
        return self._bad + self._tally.outside_winner()

    @property
    def rows(self) -> int:
        """Examples :func:`read_feedback` would return now (the store's schema's rows)."""
        return self._tally.winner_rows()

    def update(self) -> int:
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
                problem = _record_problem(arrays)
                if problem is None:
                    self._tally.add(_schema(arrays), arrays[LABEL_KEY].shape[0])
                else:
                    problems.append((offset, problem))
            self._bad += len(problems)
            self.reasons = (self.reasons + [f"{shard.name} byte {o}: {w}" for o, w in problems])[-MAX_REASONS:]
        return self.quarantined


class _Tally:
    """Rows and records per schema; the store's schema is the one with the most rows."""

    def __init__(self) -> None:
        self._counts: dict[tuple, list[int]] = {}  # schema -> [rows, records, order first seen]

    def add(self, schema: tuple, rows: int) -> None:
        entry = self._counts.setdefault(schema, [0, 0, len(self._counts)])
        entry[0] += rows
        entry[1] += 1

    def winner(self) -> tuple | None:
        return max(self._counts, key=lambda s: (self._counts[s][0], -self._counts[s][2]), default=None)

    def winner_rows(self) -> int:
        winner = self.winner()
        return 0 if winner is None else self._counts[winner][0]

    def outside_winner(self) -> int:
        winner = self.winner()
        return sum(entry[1] for schema, entry in self._counts.items() if schema != winner)
