"""The bytes of a feedback shard: record framing, encoding, and a parser that survives damage.

::

    shard-00000001.tgfb   b"TGFBSHD1" then records
    record                u32 payload length | u32 crc32(payload) | payload      (little endian)
    payload               f64 timestamp | u16 array count | arrays
    array                 u16 name length | name (utf-8) | u32 npy length | .npy bytes

A parse never raises on what it reads: a record that fails its checksum, or bytes that are no
record, with a good record after them, and a well-framed payload that does not decode are
reported as *bad* (to be quarantined); after damage the parser finds the next record by its
framing (a plausible header whose checksum matches). Bytes at the end that hold no complete
record are a *torn* tail (a crash's, or an append still being written).
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHARD_MAGIC = b"TGFBSHD1"
LABEL_KEY = "label"
INPUT_PREFIX = "in:"
_HEADER = struct.Struct("<II")  # payload length, crc32


def encode_record(arrays: Mapping[str, np.ndarray], timestamp: float) -> bytes:
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


def _decode(payload: memoryview) -> tuple[float, dict[str, np.ndarray]]:
    """The record in ``payload``; ValueError unless it is well formed to its last byte."""
    try:
        timestamp, count = struct.unpack_from("<dH", payload, 0)
        offset = 10
        arrays = {}
        for _ in range(count):
            (name_len,) = struct.unpack_from("<H", payload, offset)
            name = bytes(payload[offset + 2:offset + 2 + name_len]).decode()
            offset += 2 + name_len
            (npy_len,) = struct.unpack_from("<I", payload, offset)
            offset += 4
            if offset + npy_len > len(payload) or name in arrays:
                raise ValueError(f"array {name!r} runs past the record or appears twice")
            arrays[name] = _load_npy(payload[offset:offset + npy_len])
            offset += npy_len
    except (struct.error, UnicodeDecodeError, EOFError, OSError) as exc:
        raise ValueError(str(exc)) from None
    if offset != len(payload):
        raise ValueError(f"{len(payload) - offset} bytes after the last array")
    return timestamp, arrays


_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _load_npy(chunk: memoryview) -> np.ndarray:
    # The header is checked against the bytes present before anything is allocated: a
    # damaged shape must not make np.load allocate terabytes.
    f = io.BytesIO(chunk)
    read_header = _NPY_HEADERS.get(np.lib.format.read_magic(f))
    if read_header is None:
        raise ValueError("unsupported .npy version")
    shape, fortran, dtype = read_header(f)
    if dtype.hasobject or dtype.itemsize == 0:
        raise ValueError(f"dtype {dtype} cannot be stored")
    if math.prod(shape) * dtype.itemsize != len(chunk) - f.tell():
        raise ValueError(f"shape {shape} of {dtype} does not match {len(chunk) - f.tell()} bytes")
    flat = np.frombuffer(chunk, dtype, math.prod(shape), f.tell())
    return flat.reshape(shape, order="F" if fortran else "C")


@dataclass
class Parsed:
    records: list[tuple[int, float, dict[str, np.ndarray]]]  # byte offset, timestamp, arrays
    bad: list[tuple[int, str]]  # byte offset, reason: quarantined
    end: int  # where a later read resumes: the end, or a torn tail's start; -1: a foreign file
    torn: bool


def read_shard(path: Path, start: int, limit: int | None = None) -> Parsed:
    """The records of ``path`` from byte ``start`` (a record boundary) up to ``limit``."""
    with path.open("rb") as f:
        f.seek(start)
        data = f.read() if limit is None else f.read(max(limit - start, 0))
    offset = 0
    if start == 0:
        if len(data) < len(SHARD_MAGIC):
            return Parsed([], [], 0, bool(data))  # crashed (or still busy) creating the shard
        if data[:len(SHARD_MAGIC)] != SHARD_MAGIC:
            return Parsed([], [(0, "not a feedback shard (no magic): the whole file is skipped")], -1, False)
        offset = len(SHARD_MAGIC)
    parsed = Parsed([], [], start, False)
    view = memoryview(data)
    while offset < len(data):
        end = _frame_end(data, offset)
        if end is not None:
            try:
                timestamp, arrays = _decode(view[offset + _HEADER.size:end])
                parsed.records.append((start + offset, timestamp, arrays))
            except ValueError as exc:
                parsed.bad.append((start + offset, f"malformed record: {exc}"))
            offset = end
            continue
        found = _next_frame(data, offset + 1)
        if found is None:
            parsed.torn = True  # no complete record follows: a crash's torn tail
            break
        parsed.bad.append((start + offset, f"{found - offset} bytes that are no record (checksum or framing)"))
        offset = found
    parsed.end = start + offset
    return parsed


_RECORD_START = struct.Struct("<IIdHH")  # length, crc, timestamp, array count, first name length
_FIRST_NAME = _RECORD_START.size  # where a record's first array name starts
_MIN_PAYLOAD = 10 + 2 + 1 + 4  # timestamp, count, one array: name length, a name, npy length


def _frame_end(data: bytes, offset: int) -> int | None:
    """The end of the record at ``offset`` if its header fits and its checksum matches."""
    if offset + _HEADER.size > len(data):
        return None
    length, crc = _HEADER.unpack_from(data, offset)
    end = offset + _HEADER.size + length
    if length < _MIN_PAYLOAD or end > len(data) or zlib.crc32(data[offset + _HEADER.size:end]) != crc:
        return None
    return end


def _next_frame(data: bytes, start: int) -> int | None:
    """The first record at or after ``start``, after damage. A record's first array name
    starts with ``in:`` (or ``label``), so only those places are tried, each found by a
    C-speed search and ruled out cheaply before its checksum is computed."""
    pos = start + _FIRST_NAME
    hits: dict[bytes, int | None] = {INPUT_PREFIX.encode(): None, LABEL_KEY.encode(): None}  # None: not searched yet
    while True:
        for needle, at in hits.items():
            if at is None or 0 <= at < pos:
                hits[needle] = data.find(needle, pos)
        live = [at for at in hits.values() if at is not None and at >= 0]
        if not live:
            return None
        candidate = min(live) - _FIRST_NAME
        if _plausible(data, candidate) and _frame_end(data, candidate) is not None:
            return candidate
        pos = min(live) + 1


def _plausible(data: bytes, offset: int) -> bool:
    if offset + _RECORD_START.size > len(data):
        return False
    length, _, timestamp, count, name_len = _RECORD_START.unpack_from(data, offset)
    return (_MIN_PAYLOAD <= length <= len(data) - offset - _HEADER.size and 1 <= count <= 4096
            and 3 <= name_len <= 4096 and math.isfinite(timestamp))
