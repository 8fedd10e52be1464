"""The capture log on disk: records, segments, one directory per gateway instance, label claims.

Layout, per model (hidden, so Triton and the version scan ignore it)::

    <repo>/<model>/.capture/<instance>/seg-NNNNNNNN.cap        captures, appended by that instance only
    <repo>/<model>/.capture/<instance>/seg-NNNNNNNN.claims     the segment's label claims, one log

Each process incarnation writes only its own directory, so no two processes ever append to one
file; every process reads the others' segments. Segments written by a gateway before instance
directories existed (``.capture/seg-NNNNNNNN.cap``) are read like another instance's.

A label claim is a line in the claims log beside the segment that holds the capture, appended
under the log's lock (``gateway.loop.capture_claims``): of two processes labelling one capture
exactly one wins, and a restarted gateway that reads the segment back sees the claim. Claims
live and die with their segment: two files per segment, whatever the number of labels.

Record: ``u32 length | u32 crc32 | payload``; payload: ``u32 header length | header JSON
({"id", "version", "predicted"}) | .npz of the inputs``. The id sits at the front, so an index
reads a record's first bytes and skips its inputs. Text (BYTES) inputs are kept as the
feedback store keeps them, UTF-8 fixed-width bytes (``model_repo.feedback_format``), so
reading a capture never unpickles, and come back as object arrays of str.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_repo.feedback_format import decode_text, encode_text, is_text

from .capture_claims import ClaimLogs, legacy_dir, log_path

log = logging.getLogger("tunegate.capture")

SEGMENT_RE = re.compile(r"^seg-(\d{8})\.cap$")
_CLAIMS_RE = re.compile(r"^seg-\d{8}\.(labelled|claims)$")
_INSTANCE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_HEADER = struct.Struct("<II")
_PREFIX = struct.Struct("<III")  # the record header and the payload's header length


@dataclass
class Captured:
    version: int
    inputs: dict[str, np.ndarray]
    predicted: np.ndarray | None  # class per row when the first output is a score matrix
    nbytes: int

    @property
    def rows(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0])


def check_instance(instance: str) -> str:
    """``instance`` when it can name a directory beside the others (else ValueError)."""
    if not _INSTANCE_RE.match(instance) or _CLAIMS_RE.match(instance):
        raise ValueError(f"instance id {instance!r} must be 1-128 letters, digits, '.', '_' or '-'")
    return instance


def input_bytes(inputs: dict[str, np.ndarray]) -> int:
    """What ``inputs`` hold, for the capture's byte bound: a text array's object pointers say
    nothing of its texts' size, so those count their characters."""
    return sum(sum(len(x) for x in a.reshape(-1)) if a.dtype.hasobject else a.nbytes for a in inputs.values())


def encode(request_id: str, item: Captured) -> bytes:
    header = json.dumps({"id": request_id, "version": item.version,
                         "predicted": None if item.predicted is None else item.predicted.tolist()}).encode()
    blob = io.BytesIO()
    # savez would pickle an object array; text goes as UTF-8 bytes (ValueError if it is none).
    np.savez(blob, **{k: encode_text(a) if is_text(a) else a for k, a in item.inputs.items()})
    payload = struct.pack("<I", len(header)) + header + blob.getvalue()
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def decode(payload: bytes) -> tuple[str, Captured]:
    (n,) = struct.unpack_from("<I", payload, 0)
    header = json.loads(payload[4:4 + n])
    with np.load(io.BytesIO(payload[4 + n:]), allow_pickle=False) as npz:
        inputs = {k: npz[k] for k in npz.files}
    inputs = {k: decode_text(a) if is_text(a) else a for k, a in inputs.items()}
    predicted = None if header["predicted"] is None else np.asarray(header["predicted"])
    return header["id"], Captured(int(header["version"]), inputs, predicted, input_bytes(inputs))


def segments(directory: Path) -> list[Path]:
    """``directory``'s segments, oldest first."""
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [directory / n for n in sorted(names) if SEGMENT_RE.match(n)]


def segment_number(segment: Path) -> int:
    return int(SEGMENT_RE.match(segment.name).group(1))


def instance_dirs(root: Path) -> list[Path]:
    """The instance directories under a model's ``.capture`` root."""
    try:
        entries = list(os.scandir(root))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [Path(e.path) for e in entries
            if e.is_dir(follow_symlinks=False) and _INSTANCE_RE.match(e.name) and not _CLAIMS_RE.match(e.name)]


def scan(segment: Path, start: int) -> tuple[list[tuple[str, int]], int]:
    """(request id, offset) of each whole record from byte ``start``, and where the next read
    starts: a record still being appended is read next time. The inputs are skipped, and the
    checksum is verified when a record is read (:func:`read`). An unreadable header ends the
    segment: -1."""
    found: list[tuple[str, int]] = []
    with open(segment, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        pos = start
        while pos + _PREFIX.size <= size:
            f.seek(pos)
            length, _, header_length = _PREFIX.unpack(f.read(_PREFIX.size))
            if pos + _HEADER.size + length > size:
                break  # still being written (or a torn tail): look again later
            try:
                if header_length > length - 4:
                    raise ValueError("header longer than its record")
                found.append((json.loads(f.read(header_length))["id"], pos))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("%s: unreadable capture at byte %d, the rest is skipped: %s", segment, pos, exc)
                return found, -1
            pos += _HEADER.size + length
    return found, pos


def read(segment: Path, offset: int) -> tuple[str, Captured] | None:
    """The record at ``offset``; None when its segment is gone or the record is damaged."""
    try:
        with open(segment, "rb") as f:
            f.seek(offset)
            length, crc = _HEADER.unpack(f.read(_HEADER.size))
            payload = f.read(length)
    except (FileNotFoundError, struct.error):
        return None
    if len(payload) < length or zlib.crc32(payload) != crc:
        log.warning("%s: damaged capture at byte %d", segment, offset)
        return None
    try:
        return decode(payload)
    except (ValueError, KeyError, struct.error) as exc:
        log.warning("%s: unreadable capture at byte %d: %s", segment, offset, exc)
        return None


# ------------------------------------------------------------------ claims
# One per process: a cache of what it has read of each claims log (see capture_claims).
_CLAIMS = ClaimLogs()


def is_claimed(segment: Path, request_id: str) -> bool:
    return _CLAIMS.is_claimed(segment, request_id)


def claim(segment: Path, request_id: str) -> bool:
    """Claim the capture of ``request_id`` in ``segment`` for one label: True for the one
    caller (of any process) that made the claim, False when it was made before."""
    return _CLAIMS.claim(segment, request_id)


def release(segment: Path, request_id: str) -> None:
    """Undo :func:`claim`: the label was not stored, a retry may claim again."""
    _CLAIMS.release(segment, request_id)


def remove_segment(segment: Path) -> None:
    # The segment before its claims: a claim made while its segment exists is seen by every
    # later check (see CaptureStore.claim).
    segment.unlink(missing_ok=True)
    log_path(segment).unlink(missing_ok=True)
    shutil.rmtree(legacy_dir(segment), ignore_errors=True)
    _CLAIMS.forget(segment)


def remove_orphan_claims(directory: Path) -> None:
    """Claims whose segment is gone (a claim raced the segment's removal)."""
    for claims in directory.glob("seg-*"):
        if _CLAIMS_RE.match(claims.name) and not claims.with_suffix(".cap").exists():
            if claims.is_dir():
                shutil.rmtree(claims, ignore_errors=True)
            else:
                claims.unlink(missing_ok=True)


def remove_stale(root: Path, own: str, stale_after: float, now: float) -> None:
    """Remove the other instances' directories (and the segments of before instance
    directories) last written more than ``stale_after`` seconds before ``now``."""
    for segment in segments(root):
        if now - _mtime(segment) > stale_after:
            remove_segment(segment)
    for directory in instance_dirs(root):
        if directory.name == own:
            continue
        newest = max([_mtime(directory)] + [_mtime(s) for s in segments(directory)])
        if now - newest > stale_after:
            log.info("removing the captures of gateway instance %s (last written %.0f s ago)",
                     directory.name, now - newest)
            for segment in segments(directory):
                remove_segment(segment)
            shutil.rmtree(directory, ignore_errors=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0
