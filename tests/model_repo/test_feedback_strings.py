"""Text (BYTES) inputs in the feedback store: stored as UTF-8 fixed-width bytes without pickle,
read back as object arrays of str, one schema whatever their width, quarantined when they do
not decode, and kept row for row by compaction."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest

from model_repo.errors import FeedbackError
from model_repo.feedback import FeedbackScan, FeedbackWriter, last_sequence, list_shards, read_feedback
from model_repo.feedback_compact import FeedbackPolicy, compact_feedback
from model_repo.feedback_format import TEXT, schema

TEXTS = ["great movie", "", "Ünïcödé ÉCOLE 日本語 🎬", "a much, much longer review than the others!", " \t "]


def _texts(i: int, rows: int) -> np.ndarray:
    """``rows`` texts of different lengths for record ``i``; each names its record."""
    return np.array([[f"{TEXTS[(i + k) % len(TEXTS)]} #{i}"] for k in range(rows)], dtype=object)


def test_text_round_trips_as_str_whatever_it_was_sent_as(tmp_path):
    sent = [np.array([["great movie"], ["bad"]], dtype=object),  # str objects (HTTP JSON)
            np.array([["Ünïcödé 日本語".encode()], [b""]], dtype=object),  # bytes objects (binary, gRPC)
            np.array([["x" * 300], ["\u00e9"]]),  # numpy unicode
            np.array([[b"raw"], [b"bytes"]])]  # numpy bytes
    with FeedbackWriter(tmp_path) as writer:
        numbers = [writer.append({"text": t}, np.array([1, 0])) for t in sent]
    assert [list(r) for r in numbers] == [[1, 2], [3, 4], [5, 6], [7, 8]]
    data = read_feedback(tmp_path)
    assert data.quarantined == 0 and data.records == 4
    assert data.inputs["text"].dtype == object and data.inputs["text"].shape == (8, 1)
    assert all(type(x) is str for x in data.inputs["text"].ravel())
    assert data.inputs["text"].ravel().tolist() == ["great movie", "bad", "Ünïcödé 日本語", "", "x" * 300, "é",
                                                    "raw", "bytes"]
    np.testing.assert_array_equal(data.sequences, np.arange(1, 9))
    assert last_sequence(tmp_path) == 8


def test_the_store_holds_bytes_not_pickles(tmp_path):
    with FeedbackWriter(tmp_path) as writer:
        writer.append({"text": np.array([["café"]], dtype=object)}, np.array([1]))
    raw = list_shards(tmp_path)[0].read_bytes()
    assert "café".encode() in raw and b"|S5" in raw  # the .npy header of UTF-8 bytes, 5 wide
    assert b"\x80\x04" not in raw and b"'|O'" not in raw  # no pickle protocol header, no object dtype


def test_widths_are_no_part_of_the_schema(tmp_path):
    with FeedbackWriter(tmp_path) as writer:
        for i, rows in enumerate((1, 3, 2)):
            writer.append({"text": _texts(i, rows)}, np.zeros(rows, np.int64))
    data = read_feedback(tmp_path)
    assert data.quarantined == 0 and len(data) == 6
    short = {"in:text": np.array([[b"a"]]), "label": np.zeros(1, np.int64)}
    long = {"in:text": np.array([["a" * 50]], dtype=object), "label": np.zeros(1, np.int64)}
    assert schema(short) == schema(long) == (("in:text", TEXT, (1,)), ("label", np.dtype(np.int64).str, ()))
    assert FeedbackScan(tmp_path).update() == 0


@pytest.mark.parametrize("value, why", [(b"\xff\xfe", "not UTF-8"), ("bad\x00", "NUL"), (3, "not text"),
                                        ("\ud800", "not UTF-8")])
def test_text_that_cannot_round_trip_is_refused_when_stored(tmp_path, value, why):
    with FeedbackWriter(tmp_path) as writer, pytest.raises(FeedbackError, match=why):
        writer.append({"text": np.array([[value]], dtype=object)}, np.array([1]))
    assert read_feedback(tmp_path).records == 0


def _record_with_raw_text(text: bytes, seq: int) -> bytes:
    """A well-framed record whose text input holds ``text`` as is (no check on the way in)."""
    arrays = {"in:text": np.array([[text]]), "label": np.array([1], np.int64), "seq": np.array([seq], np.int64)}
    payload = struct.pack("<dH", 1.0, len(arrays))
    for name, array in arrays.items():
        npy = io.BytesIO()
        np.save(npy, array, allow_pickle=False)
        payload += struct.pack("<H", len(name)) + name.encode() + struct.pack("<I", npy.tell()) + npy.getvalue()
    return struct.pack("<II", len(payload), zlib.crc32(payload)) + payload


def test_text_that_does_not_decode_is_quarantined_never_raised(tmp_path):
    with FeedbackWriter(tmp_path) as writer:
        writer.append({"text": _texts(0, 2)}, np.array([0, 1]))
        shard = writer.shard
    with open(shard, "ab") as f:  # a record written by something that checked nothing
        f.write(_record_with_raw_text(b"caf\xe9", 3))
    with FeedbackWriter(tmp_path) as writer:
        assert writer.append({"text": _texts(1, 1)}, np.array([1])) == range(3, 4)
        # Another schema (numbers where the store holds text): quarantined as well.
        writer.append({"text": np.zeros((1, 1), np.float32)}, np.array([1]))
    data = read_feedback(tmp_path)
    assert len(data) == 3 and data.quarantined == 2, data.quarantine_reasons
    assert "not UTF-8" in data.quarantine_reasons[0] and "differs from the store's" in data.quarantine_reasons[1]
    assert "in:text text[1]" in data.quarantine_reasons[1]
    assert data.inputs["text"].ravel().tolist() == [*_texts(0, 2).ravel(), *_texts(1, 1).ravel()]
    assert FeedbackScan(tmp_path).update() == 2


def test_compaction_keeps_text_rows_whole_and_numbered(tmp_path):
    with FeedbackWriter(tmp_path, max_shard_bytes=4_000) as writer:
        for i in range(120):  # two eras of three classes, texts of varied widths
            writer.append({"text": _texts(i, 3)}, np.arange(3) + 3 * (i // 60), timestamp=1000.0 + i)
    before = read_feedback(tmp_path)
    policy = FeedbackPolicy(max_rows=200, max_bytes=1 << 30, max_age_seconds=1e9, recent_rows=90,
                            reservoir_rows=40, eras=2)
    report = compact_feedback(tmp_path, policy, now=10_000.0)
    assert report["compacted"], report
    after = read_feedback(tmp_path)
    assert after.quarantined == 0 and np.unique(after.sequences).size == len(after)
    assert report["replay_rows"] == 40 and len(after) == 40 + report["recent_rows"]
    by_number = dict(zip(before.sequences.tolist(), before.inputs["text"].ravel().tolist()))
    assert after.inputs["text"].ravel().tolist() == [by_number[s] for s in after.sequences.tolist()]
    cutoff = report["cutoff"]
    np.testing.assert_array_equal(after.sequences[after.sequences > cutoff], np.arange(cutoff + 1, 361))
    replay_classes = after.labels[after.sequences <= cutoff]
    assert set(replay_classes.tolist()) == set(range(6))  # every era's classes keep a voice
    with FeedbackWriter(tmp_path) as writer:
        assert writer.append({"text": _texts(999, 1)}, np.array([0])) == range(361, 362)
