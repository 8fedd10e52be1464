"""The feedback store: labelled examples the gateway captures and the trainer learns from.

numpy only, so the gateway can import it without TensorFlow. One directory per model
(by default ``<repo>/<model>/.feedback/``; hidden, so Triton and ``list_versions`` ignore it)
holding append-only shards of checksummed records (their bytes and names:
``model_repo.feedback_format``); reading is :mod:`model_repo.feedback_read`.

Inputs are stored under their tensor names (``"in:<name>"``), labels as ``"label"``; each
record holds a batch (first axis) of one or more examples. Text inputs (str or bytes objects)
are stored as UTF-8 and read back as object arrays of ``str`` (``feedback_format``). A record's *schema* is the names,
dtypes and per-row shapes of its arrays; the gateway stores labels in one canonical form per
model (``gateway.labels``), so the records of one model share one schema.

**Sequence numbers.** Every row gets a per-model sequence number, 1, 2, 3, … that never
changes and is never reused, whichever process appended it (gateway workers, replicas on a
shared volume, a test): an append takes the store's lock (an ``flock`` on the directory),
finds the next number from the newest shard, writes and fsyncs its record there, and only
then lets the next writer in. So the store is one ordered log: numbers increase with the
order in which rows became durable, "every row up to S" is a fixed set once S has been read,
and each shard, named after the first number it may hold, holds numbers below the next
shard's name — reading "rows after S" opens no shard that ends before S.

Durability: once :meth:`FeedbackWriter.append` returns, the record survives a crash. A crash
during a write can leave a torn record at the end of the newest shard only: the next writer
sees the torn tail and starts a new shard rather than append after it, so readers skip it as
a torn tail. Shards rotate when the next record would take one past ``max_shard_bytes``. The
newest shard is what the numbering continues from: whatever removes shards (compaction)
must keep it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .durable import exclusive_lock, fsync_path
from .errors import FeedbackCorrupt, FeedbackError
from .feedback_format import (INPUT_PREFIX, LABEL_KEY, SEQ_KEY, SHARD_MAGIC, encode_record, encode_text,
                              first_sequence, is_text, list_shards, read_shard, record_problem, shard_name)
from .feedback_read import FeedbackData, FeedbackScan, read_feedback

__all__ = ["DEFAULT_MAX_SHARD_BYTES", "FEEDBACK_DIR", "LABEL_KEY", "SHARD_MAGIC", "FeedbackCorrupt",
           "FeedbackData", "FeedbackError", "FeedbackScan", "FeedbackWriter", "feedback_dir",
           "last_sequence", "list_shards", "read_feedback"]

FEEDBACK_DIR = ".feedback"
DEFAULT_MAX_SHARD_BYTES = 64 << 20


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
        if is_text(array):  # a BYTES input: stored as UTF-8 fixed-width bytes (feedback_format)
            try:
                array = encode_text(array)
            except ValueError as exc:
                raise FeedbackError(f"input {name!r}: {exc}") from None
        if array.ndim == 0 or array.shape[0] != labels.shape[0]:
            raise FeedbackError(
                f"input {name!r} has shape {array.shape} but labels have {labels.shape[0]} rows")
        arrays[INPUT_PREFIX + name] = array
    arrays[LABEL_KEY] = labels
    problem = record_problem(arrays)  # what a reader would quarantine is never written
    if problem is not None:
        raise FeedbackError(problem)
    return arrays


class _Tail:
    """The newest shard as a writer last saw it: where it ends, and the next number."""

    def __init__(self, path: Path | None, end: int, next_sequence: int, clean: bool) -> None:
        self.path, self.end, self.next_sequence, self.clean = path, end, next_sequence, clean

    @classmethod
    def read(cls, directory: Path, known: _Tail | None = None) -> _Tail:
        """The tail now, reading only what was appended since ``known`` (same shard)."""
        shards = [p for p in list_shards(directory) if first_sequence(p) > 0]
        if not shards:
            return cls(None, 0, 1, False)
        newest = shards[-1]
        tail = known if known is not None and known.path == newest else cls(newest, 0, first_sequence(newest), True)
        parsed = read_shard(newest, tail.end)
        for _, _, arrays in parsed.records:
            if record_problem(arrays) is None and SEQ_KEY in arrays:
                tail.next_sequence = max(tail.next_sequence, int(arrays[SEQ_KEY][-1]) + 1)
        # A torn tail (a writer died mid-append) or a foreign file is never appended to.
        tail.clean = not parsed.torn and parsed.end >= 0
        tail.end = max(parsed.end, tail.end)
        return tail


class FeedbackWriter:
    """Appends records to the store in ``directory``; safe across threads and processes."""

    def __init__(self, directory: str | os.PathLike[str], *,
                 max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> None:
        if max_shard_bytes < len(SHARD_MAGIC) + 64:
            raise ValueError(f"max_shard_bytes too small: {max_shard_bytes}")
        self.directory = Path(directory)
        self.max_shard_bytes = max_shard_bytes
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._tail: _Tail | None = None

    @property
    def shard(self) -> Path | None:
        """The shard this writer last appended to."""
        return None if self._tail is None else self._tail.path

    def append(self, inputs: Mapping[str, np.ndarray], labels: np.ndarray,
               timestamp: float | None = None) -> range:
        """Store one record durably; returns, once it is fsynced, its rows' sequence numbers."""
        arrays = _check_record(inputs, labels)
        rows = int(arrays[LABEL_KEY].shape[0])
        stamp = time.time() if timestamp is None else timestamp
        with self._lock, exclusive_lock(self.directory):
            tail = self._tail = _Tail.read(self.directory, self._tail)
            first = tail.next_sequence
            record = encode_record({**arrays, SEQ_KEY: np.arange(first, first + rows, dtype=np.int64)}, stamp)
            if tail.path is None or not tail.clean or (tail.end > len(SHARD_MAGIC)
                                                       and tail.end + len(record) > self.max_shard_bytes):
                self._open_new_shard(tail)
            fd = self._fd_for(tail.path)
            os.write(fd, record)
            os.fsync(fd)
            tail.end += len(record)
            tail.next_sequence = first + rows
        return range(first, first + rows)

    def _open_new_shard(self, tail: _Tail) -> None:
        # Named after the number its first record will take; a shard left without records
        # by a crash keeps its name, so the number moves past it.
        if tail.path is not None:
            tail.next_sequence = max(tail.next_sequence, first_sequence(tail.path) + 1)
        path = self.directory / shard_name(tail.next_sequence)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        os.write(fd, SHARD_MAGIC)
        os.fsync(fd)
        fsync_path(self.directory)  # the new name itself must survive a crash
        self._close_fd()
        self._fd, self._fd_path = fd, path
        tail.path, tail.end, tail.clean = path, len(SHARD_MAGIC), True

    def _fd_for(self, path: Path) -> int:
        if self._fd is None or self._fd_path != path:
            self._close_fd()
            self._fd, self._fd_path = os.open(path, os.O_WRONLY | os.O_APPEND), path
        return self._fd

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


def last_sequence(directory: str | os.PathLike[str]) -> int:
    """The highest sequence number stored (0 for none): every row up to it is durable and
    readable, so "rows up to S" pins what a job trains on while appends go on."""
    # No lock needed: appends are serialised in number order, so the newest complete
    # record's number has every smaller one complete before it.
    return _Tail.read(Path(directory)).next_sequence - 1
