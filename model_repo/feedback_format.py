"""The bytes of a feedback shard: names, record framing, encoding, and a parser that survives damage.

::

    shard-000000000001.tgfb  b"TGFBSHD1" then records; the name is the first sequence number
                             it may hold (12 digits); b"TGFBRPL1" instead marks a shard that
                             compaction wrote for the replay reservoir (``feedback_compact``)
    record                   u32 payload length | u32 crc32(payload) | payload   (little endian)
    payload                  f64 timestamp | u16 array count | arrays
    array                    u16 name length | name (utf-8) | u32 npy length | .npy bytes

A record's arrays are its inputs (``in:<name>``), its labels (``label``) and its rows'
sequence numbers (``seq``, int64, one per row). Shards written before sequence
numbers existed are named with 8 digits (``shard-00000001.tgfb``) and hold no ``seq``: their
rows read as sequence 0, before every numbered row.

Text inputs (a model's BYTES tensors) are stored without pickle as numpy fixed-width bytes
(``S<width>``, each element UTF-8, the width the record's longest element) and read back as
object arrays of ``str``: what onnxruntime and a Keras string input both take. The width is
no part of a record's schema (two records of texts of different lengths are one schema); an
element that is not UTF-8 makes its record malformed (quarantined). numpy's ``S`` type drops
trailing NUL bytes, so a text ending in ``"\\0"`` is refused when stored rather than changed.

A parse never raises on what it reads: a record that fails its checksum, or bytes that are no
record, with a good record after them, and a well-framed payload that does not decode are
reported as *bad* (to be quarantined); after damage the parser finds the next record by its
framing (a plausible header whose checksum matches). Bytes at the end that hold no complete
record are a *torn* tail (a crash's, or an append still being written).
"""

from __future__ import annotations

import io
import math
import os
import re
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHARD_MAGIC = b"TGFBSHD1"
REPLAY_MAGIC = b"TGFBRPL1"  # same records; the rows are a thinned sample of older ones
SHARD_SUFFIX = ".tgfb"
LABEL_KEY = "label"
INPUT_PREFIX = "in:"
SEQ_KEY = "seq"
_HEADER = struct.Struct("<II")  # payload length, crc32
_SHARD_RE = re.compile(r"^shard-(\d{8}|\d{12})\.tgfb$")


# ------------------------------------------------------------------- names
def shard_name(first_sequence: int) -> str:
    return f"shard-{first_sequence:012d}{SHARD_SUFFIX}"


def first_sequence(path: Path) -> int:
    """The first sequence number ``path`` may hold; 0 for a shard from before sequences."""
    digits = _SHARD_RE.match(path.name).group(1)  # type: ignore[union-attr]
    return int(digits) if len(digits) == 12 else 0


def list_shards(directory: str | os.PathLike[str]) -> list[Path]:
    """The store's shards in sequence order: the unnumbered (older) ones first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if _SHARD_RE.match(p.name)]
    return sorted(found, key=lambda p: (len(p.name), p.name))


def shard_kind(path: Path) -> str | None:
    """``"replay"`` for a reservoir shard, ``"recent"`` for any other shard, None if unreadable."""
    try:
        with path.open("rb") as f:
            magic = f.read(len(SHARD_MAGIC))
    except OSError:
        return None
    return "replay" if magic == REPLAY_MAGIC else "recent"


# ------------------------------------------------------------------- records
def record_problem(arrays: Mapping[str, np.ndarray]) -> str | None:
    """Why a decoded record cannot be used, or None."""
    inputs = [k for k in arrays if k.startswith(INPUT_PREFIX)]
    unknown = sorted(set(arrays) - set(inputs) - {LABEL_KEY, SEQ_KEY})
    if LABEL_KEY not in arrays or not inputs or unknown:
        return f"arrays {sorted(arrays)} are not inputs ('in:<name>'), one 'label' and 'seq'"
    if any(a.ndim == 0 for a in arrays.values()) or len({a.shape[0] for a in arrays.values()}) != 1:
        return f"arrays disagree on rows: {describe(schema(arrays, rows=True))}"
    labels = arrays[LABEL_KEY]
    if labels.shape[0] == 0:
        return "a record without rows"
    if labels.dtype.kind not in "biuf":
        return f"labels of dtype {labels.dtype} are not numeric"
    if labels.dtype.kind == "f" and not np.isfinite(labels).all():
        return "labels that are not finite (NaN or infinity)"
    seq = arrays.get(SEQ_KEY)
    if seq is not None and (seq.dtype != np.int64 or seq.ndim != 1 or np.any(np.diff(seq) <= 0)):
        return "sequence numbers that are not increasing int64"
    return None


def schema(arrays: Mapping[str, np.ndarray], rows: bool = False) -> tuple:
    """Names, dtypes and per-row shapes (whole shapes with ``rows``); sequence numbers aside.
    Text is one dtype whatever its width or form (``S``, ``U``, objects)."""
    return tuple(sorted((k, TEXT if is_text(a) else a.dtype.str, a.shape if rows else a.shape[1:])
                        for k, a in arrays.items() if k != SEQ_KEY))


def describe(schema: tuple) -> str:
    return ", ".join(f"{name} {dtype if dtype == TEXT else np.dtype(dtype).name}{list(shape)}"
                     for name, dtype, shape in schema)


# ------------------------------------------------------------------- text
TEXT = "text"  # a text array's dtype in a schema


def is_text(array: np.ndarray) -> bool:
    return array.dtype.kind in "OSU"


def encode_text(array: np.ndarray) -> np.ndarray:
    """``array`` (str or bytes objects, numpy unicode or bytes) as UTF-8 fixed-width bytes;
    ValueError for an element that is no text, not UTF-8, or ends in NUL (see the module doc)."""
    if array.dtype.kind == "S":
        decode_text(array)  # the check alone: its elements are already bytes
        return array
    encoded = []
    for i, item in enumerate(array.reshape(-1)):
        try:
            if isinstance(item, str):
                raw = item.encode("utf-8")  # a lone surrogate raises here
            elif isinstance(item, bytes):
                raw = bytes(item)
                raw.decode("utf-8")
            else:
                raise ValueError(f"element {i} is {type(item).__name__}, not text")
        except UnicodeError as exc:
            raise ValueError(f"element {i} is not UTF-8 text: {exc}") from None
        if raw.endswith(b"\0"):
            raise ValueError(f"element {i} ends in a NUL byte, which numpy's fixed-width bytes would drop")
        encoded.append(raw)
    # Width 1 at least: a zero-width dtype has no bytes to store (and the reader refuses it).
    width = max(1, max(map(len, encoded), default=1))
    return np.array(encoded, dtype=f"S{width}").reshape(array.shape)


def decode_text(array: np.ndarray) -> np.ndarray:
    """Text in any of its forms (``str`` or ``bytes`` objects, numpy unicode or bytes) as an
    object array of ``str``: what onnxruntime and Keras take (a ``bytes`` element would become
    the text ``"b'...'"``). ValueError naming the first element that is not UTF-8 text."""
    out = np.empty(array.shape, dtype=object)
    flat = out.reshape(-1)
    for i, item in enumerate(array.reshape(-1)):
        if isinstance(item, bytes):  # np.bytes_ too
            try:
                item = item.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"element {i} is text that is not UTF-8 ({exc.reason})") from None
        elif not isinstance(item, str):
            raise ValueError(f"element {i} is a {type(item).__name__}, not text")
        flat[i] = str(item)
    return out


def row_sequences(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """Each row's sequence number: the record's own, or 0 for a record from before them."""
    seq = arrays.get(SEQ_KEY)
    return seq if seq is not None else np.zeros(arrays[LABEL_KEY].shape[0], np.int64)


def encode_record(arrays: Mapping[str, np.ndarray], timestamp: float) -> bytes:
    out = io.BytesIO()
    out.write(struct.pack("<dH", timestamp, len(arrays)))
    for name, array in arrays.items():
        raw = io.BytesIO()
        if is_text(array):
            array = encode_text(array)  # what a reader decoded (compaction rewrites it) goes back as bytes
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
            array = _load_npy(payload[offset:offset + npy_len])
            arrays[name] = decode_text(array) if is_text(array) else array
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
        if data[:len(SHARD_MAGIC)] not in (SHARD_MAGIC, REPLAY_MAGIC):
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
