"""Nothing written into a feedback shard can take the reader down: damaged, malformed and
foreign records are quarantined and counted, and every good sample comes back exactly."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model_repo.feedback import SHARD_MAGIC, FeedbackScan, FeedbackWriter, list_shards, read_feedback
from model_repo.feedback_format import encode_record


def _good(i: int, rows: int = 2) -> bytes:
    return encode_record({"in:x": np.full((rows, 4), i, np.float32), "label": np.full(rows, i, np.int64)}, 1000.0 + i)


def _framed(payload: bytes) -> bytes:
    return struct.pack("<II", len(payload), zlib.crc32(payload)) + payload


def _npy_claiming(shape: tuple[int, ...]) -> bytes:
    """A .npy header that claims ``shape`` of float32 but carries 4 bytes of data."""
    raw = io.BytesIO()
    np.lib.format.write_array_header_1_0(raw, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return raw.getvalue() + b"\0" * 4


def _payload(arrays: list[tuple[str, bytes]], timestamp: float = 1.0) -> bytes:
    out = struct.pack("<dH", timestamp, len(arrays))
    for name, npy in arrays:
        out += struct.pack("<H", len(name)) + name.encode() + struct.pack("<I", len(npy)) + npy
    return out


def _shard(tmp_path, number: int, *parts: bytes):
    path = tmp_path / f"shard-{number:08d}.tgfb"
    path.write_bytes(SHARD_MAGIC + b"".join(parts))
    return path


def _expect_good(read, ids: list[int], rows: int = 2) -> None:
    assert read.labels.tolist() == [i for i in ids for _ in range(rows)]
    np.testing.assert_array_equal(read.inputs["x"], np.repeat(np.asarray(ids, np.float32), rows)[:, None]
                                  * np.ones((1, 4), np.float32))
    np.testing.assert_array_equal(read.timestamps, np.repeat(1000.0 + np.asarray(ids, np.float64), rows))


def test_every_kind_of_bad_record_in_the_middle_of_a_shard_is_quarantined(tmp_path):
    broken_length = bytearray(_good(99))
    broken_length[0:4] = struct.pack("<I", 1 << 30)  # its framing is lost: the reader must resync
    flipped = bytearray(_good(98))
    flipped[30] ^= 0x55  # fails its checksum
    x_npy = io.BytesIO()
    np.save(x_npy, np.zeros((3, 4), np.float32))
    label_npy = io.BytesIO()
    np.save(label_npy, np.zeros(2, np.int64))
    _shard(tmp_path, 1,
           _good(0),
           b"\x00garbage\xff" * 37,                                               # bytes that are no record
           _good(1),
           bytes(broken_length),
           _good(2),
           bytes(flipped),
           _good(3),
           _framed(b"\x01\x02well framed but not a payload\x03" * 3),              # malformed payload
           _framed(_payload([("in:x", _npy_claiming((1 << 40,))), ("label", label_npy.getvalue())])),
           _framed(_payload([("in:x", x_npy.getvalue()), ("label", label_npy.getvalue())])),  # rows disagree
           encode_record({"in:x": np.zeros((1, 4), np.float32), "label": np.array([np.nan], np.float32)}, 1.0),
           encode_record({"in:x": np.zeros((1, 4), np.float32)}, 1.0),            # no labels
           encode_record({"in:other": np.zeros((1, 4), np.float32), "label": np.zeros(1, np.int64)}, 1.0),
           encode_record({"in:x": np.zeros((1, 7), np.float32), "label": np.zeros(1, np.int64)}, 1.0),
           _good(4))
    _shard(tmp_path, 2, _good(5))
    (tmp_path / "shard-00000003.tgfb").write_bytes(b"TGFBSHD0" + _good(6))  # bad magic: skipped whole
    _shard(tmp_path, 4, _good(7), _good(8)[:-3])  # a torn tail is not quarantine
    read = read_feedback(tmp_path)
    _expect_good(read, [0, 1, 2, 3, 4, 5, 7])
    assert read.records == 7 and read.torn_records == 1
    assert read.quarantined == 11, read.quarantine_reasons
    assert len(read.quarantine_reasons) == 11
    assert all(reason.startswith("shard-0000000") for reason in read.quarantine_reasons)
    assert FeedbackScan(tmp_path).update() == 11


def test_the_scan_reads_only_what_was_appended_and_counts_like_the_reader(tmp_path):
    scan = FeedbackScan(tmp_path)
    assert scan.update() == 0  # no directory yet
    path = _shard(tmp_path, 1, _good(0))
    assert scan.update() == 0
    with open(path, "ab") as f:
        f.write(b"junk" * 10)  # at the end: a torn tail, maybe an append still being written
    assert scan.update() == 0 and read_feedback(tmp_path).quarantined == 0
    with open(path, "ab") as f:
        f.write(_good(1))  # now the junk is followed by a record: it is damage
    assert scan.update() == 1 == read_feedback(tmp_path).quarantined
    with FeedbackWriter(tmp_path) as writer:  # another schema, fewer rows: quarantined
        writer.append({"x": np.zeros((1, 9), np.float32)}, np.zeros(1, np.int64))
    assert scan.update() == 2 == read_feedback(tmp_path).quarantined
    with FeedbackWriter(tmp_path) as writer:  # ...until it holds the most rows
        writer.append({"x": np.zeros((5, 9), np.float32)}, np.zeros(5, np.int64))
    assert scan.update() == 3 == read_feedback(tmp_path).quarantined
    assert read_feedback(tmp_path).inputs["x"].shape == (6, 9)
    for shard in list_shards(tmp_path)[1:]:
        shard.unlink()
    assert scan.update() == 1 == read_feedback(tmp_path).quarantined


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(0, 10_000), junk=st.binary(min_size=1, max_size=64),
       mode=st.sampled_from(["insert", "overwrite", "delete"]))
def test_random_damage_never_raises_and_loses_only_the_damaged_records(tmp_path, position, junk, mode):
    records = [_good(i, rows=1 + i % 3) for i in range(8)]
    starts, offset = [], len(SHARD_MAGIC)
    for record in records:
        starts.append(offset)
        offset += len(record)
    data = bytearray(SHARD_MAGIC + b"".join(records))
    at = len(SHARD_MAGIC) + position % (len(data) - len(SHARD_MAGIC))
    if mode == "insert":
        data[at:at] = junk
        hit = range(at, at + 1)
    elif mode == "overwrite":
        data[at:at + len(junk)] = junk
        hit = range(at, at + len(junk))
    else:
        del data[at:at + len(junk)]
        hit = range(at, at + len(junk))
    path = tmp_path / "shard-00000001.tgfb"
    path.write_bytes(bytes(data))
    read = read_feedback(tmp_path)
    intact = [i for i, start in enumerate(starts)
              if not any(start <= b < start + len(records[i]) for b in hit)
              and not (mode == "insert" and at == start + len(records[i]) and i == len(records) - 1)]
    got = read.labels.tolist()
    expected_rows = [i for i in intact for _ in range(1 + i % 3)]
    # Every untouched record comes back, in order; a damaged one may survive only if the
    # damage left its bytes equal (e.g. junk that repeats what was there).
    assert [v for v in got if v in intact] == expected_rows
    assert set(got) <= set(range(8))
    assert FeedbackScan(tmp_path).update() == read.quarantined
    path.unlink()
