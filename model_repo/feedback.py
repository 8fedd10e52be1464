"""The feedback store: labelled examples the gateway captures and the trainer learns from.

numpy only, so the gateway can import it without TensorFlow. One directory per model
(by default ``<repo>/<model>/.feedback/``; hidden, so Triton and ``list_versions`` ignore it)
holding append-only shards::

    shard-00000001.tgfb   b"TGFBSHD1" then records
    record                u32 payload length | u32 crc32(payload) | payload      (little endian)
    payload               f64 timestamp | u16 array count | arrays
    array                 u16 name length | name (utf-8) | u32 npy length | .npy bytes

Inputs are stored under their tensor names (``"in:<name>"``), labels as ``"label"``; each
record holds a batch (first axis) of one or more examples.

Durability: a record is one ``write`` on an ``O_APPEND`` descriptor followed by ``fsync``,
so once :meth:`FeedbackWriter.append` returns, the record survives a crash. A crash during a
write can leave a torn record at the end of a shard only: a writer never appends to a shard
it did not create (it starts a new one when opened), so readers stop at the first record
that is incomplete or fails its checksum at a shard's end and skip it. A bad record that is
followed by more data is corruption, not a crash, and raises :class:`FeedbackCorrupt`.
Shards rotate when the next record would take one past ``max_shard_bytes``.
"""

from __future__ import annotations

import io
import os
import re
import struct
import threading
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .durable import exclusive_lock, fsync_path
from .errors import RepositoryError

FEEDBACK_DIR = ".feedback"
SHARD_MAGIC = b"TGFBSHD1"
SHARD_SUFFIX = ".tgfb"
LABEL_KEY = "label"
_INPUT_PREFIX = "in:"
_HEADER = struct.Struct("<II")  # payload length, crc32
_SHARD_RE = re.compile(r"^shard-(\d{8})\.tgfb$")
DEFAULT_MAX_SHARD_BYTES = 64 << 20


class FeedbackError(RepositoryError):
    """A feedback record that cannot be stored (bad arrays): the client's fault."""

    status = 400


class FeedbackCorrupt(RepositoryError):
    """A shard whose content is damaged somewhere other than a torn tail."""

    status = 500


def feedback_dir(repo_root: str | os.PathLike[str], model: str) -> Path:
    """Where the gateway writes, and the trainer reads, ``model``'s feedback by default."""
    return Path(repo_root) / model / FEEDBACK_DIR


# ------------------------------------------------------------------ encoding
def _encode(arrays: Mapping[str, np.ndarray], timestamp: float) -> bytes:
    out = io.BytesIO()
    out.write(struct.pack("<dH", timestamp, len(arrays)))
    for name, array in arrays.items():
        raw = io.BytesIO()
        # allow_pickle=False: object arrays are refused, so reading never unpickles.
        np.save(raw, np.ascontiguousarray(array), allow_pickle=False)
        encoded_name = name.encode()
        out.write(struct.pack("<H", len(encoded_name)) + encoded_name)
        out.write(struct.pack("<I", raw.tell()) + raw.getvalue())
    payload = out.getvalue()
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def _decode(payload: bytes) -> tuple[float, dict[str, np.ndarray]]:
    view = memoryview(payload)
    timestamp, count = struct.unpack_from("<dH", view, 0)
    offset = 10
    arrays = {}
    for _ in range(count):
        (name_len,) = struct.unpack_from("<H", view, offset)
        offset += 2
        name = bytes(view[offset:offset + name_len]).decode()
        offset += name_len
        (npy_len,) = struct.unpack_from("<I", view, offset)
        offset += 4
        arrays[name] = np.load(io.BytesIO(view[offset:offset + npy_len]), allow_pickle=False)
        offset += npy_len
    return timestamp, arrays


def _check_record(inputs: Mapping[str, np.ndarray], labels: np.ndarray) -> dict[str, np.ndarray]:
    if not inputs:
        raise FeedbackError("a feedback record needs at least one input")
    labels = np.asarray(labels)
    if labels.ndim == 0:
        raise FeedbackError("labels must have a batch dimension")
    arrays = {}
    for name, value in inputs.items():
        array = np.asarray(value)
        if array.dtype.hasobject:
            raise FeedbackError(f"input {name!r}: object arrays cannot be stored")
        if array.ndim == 0 or array.shape[0] != labels.shape[0]:
            raise FeedbackError(
                f"input {name!r} has shape {array.shape} but labels have {labels.shape[0]} rows")
        arrays[_INPUT_PREFIX + name] = array
    if labels.dtype.hasobject:
        raise FeedbackError("labels: object arrays cannot be stored")
    arrays[LABEL_KEY] = labels
    return arrays


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
        record = _encode(_check_record(inputs, labels), time.time() if timestamp is None else timestamp)
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
@dataclass
class FeedbackData:
    inputs: dict[str, np.ndarray]  # tensor name -> rows, concatenated over records
    labels: np.ndarray
    timestamps: np.ndarray  # float64 seconds, one per row
    records: int
    torn_records: int  # incomplete tails skipped (left by crashes)

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


def read_shard(path: Path, limit: int | None = None) -> tuple[list[tuple[float, dict[str, np.ndarray]]], bool]:
    """All complete records of one shard (of its first ``limit`` bytes), and whether a torn
    tail was skipped."""
    with path.open("rb") as f:
        data = f.read() if limit is None else f.read(limit)
    if len(data) < len(SHARD_MAGIC):
        return [], bool(data)  # crashed while creating the shard
    if data[:len(SHARD_MAGIC)] != SHARD_MAGIC:
        raise FeedbackCorrupt(f"{path}: not a feedback shard")
    records = []
    offset = len(SHARD_MAGIC)
    while offset < len(data):
        end = offset + _HEADER.size
        if end > len(data):
            return records, True
        length, crc = _HEADER.unpack_from(data, offset)
        if end + length > len(data):
            return records, True
        payload = data[end:end + length]
        if zlib.crc32(payload) != crc:
            if end + length == len(data):
                return records, True  # e.g. a size extended before its data reached disk
            raise FeedbackCorrupt(f"{path}: record at byte {offset} fails its checksum")
        try:
            records.append(_decode(payload))
        except (ValueError, struct.error, UnicodeDecodeError) as exc:
            raise FeedbackCorrupt(f"{path}: record at byte {offset} is malformed: {exc}") from None
        offset = end + length
    return records, False


def read_feedback(directory: str | os.PathLike[str], at: Mapping[str, int] | None = None) -> FeedbackData:
    """Every complete record in ``directory``, oldest shard first; with ``at`` (a
    :func:`snapshot`), only what the store held then."""
    inputs: dict[str, list[np.ndarray]] = {}
    labels: list[np.ndarray] = []
    stamps: list[np.ndarray] = []
    count = torn = 0
    shards = list_shards(directory)
    if at is not None:
        missing = sorted(set(at) - {p.name for p in shards})
        if missing:
            raise FeedbackCorrupt(f"{directory}: shards {missing} of the snapshot are gone")
        shards = [p for p in shards if p.name in at]
    for shard in shards:
        records, had_torn_tail = read_shard(shard, None if at is None else at[shard.name])
        torn += had_torn_tail
        for timestamp, arrays in records:
            names = {k[len(_INPUT_PREFIX):] for k in arrays if k.startswith(_INPUT_PREFIX)}
            if count and names != inputs.keys():
                raise FeedbackCorrupt(
                    f"{shard}: record inputs {sorted(names)} differ from earlier {sorted(inputs)}")
            for name in names:
                inputs.setdefault(name, []).append(arrays[_INPUT_PREFIX + name])
            labels.append(arrays[LABEL_KEY])
            stamps.append(np.full(arrays[LABEL_KEY].shape[0], timestamp, dtype=np.float64))
            count += 1
    if not count:
        return FeedbackData({}, np.zeros((0,), np.float32), np.zeros((0,), np.float64), 0, torn)
    try:
        joined = {name: np.concatenate(parts) for name, parts in inputs.items()}
        joined_labels = np.concatenate(labels)
    except ValueError as exc:
        raise FeedbackCorrupt(f"{directory}: records have inconsistent shapes: {exc}") from None
    return FeedbackData(joined, joined_labels, np.concatenate(stamps), count, torn)
