"""The feedback store: durable appends, sequence numbers, rotation, torn tails skipped,
corruption refused."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from model_repo.feedback import (
    SHARD_MAGIC,
    FeedbackCorrupt,
    FeedbackError,
    FeedbackWriter,
    feedback_dir,
    last_sequence,
    list_shards,
    read_feedback,
)


def _record(i: int, rows: int = 2) -> tuple[dict[str, np.ndarray], np.ndarray]:
    x = np.full((rows, 4), i, dtype=np.float32)
    return {"x": x}, np.full((rows,), i % 10, dtype=np.int64)


def test_round_trip_keeps_order_dtypes_and_timestamps(tmp_path):
    with FeedbackWriter(tmp_path) as writer:
        for i in range(5):
            writer.append(*_record(i), timestamp=1000.0 + i)
    data = read_feedback(tmp_path)
    assert data.records == 5 and len(data) == 10 and data.torn_records == 0
    assert data.inputs["x"].dtype == np.float32 and data.inputs["x"].shape == (10, 4)
    assert data.labels.dtype == np.int64
    np.testing.assert_array_equal(data.inputs["x"][:, 0], np.repeat(np.arange(5), 2))
    np.testing.assert_array_equal(data.timestamps, np.repeat(1000.0 + np.arange(5), 2))


def test_empty_or_missing_directory_reads_as_empty(tmp_path):
    assert len(read_feedback(tmp_path / "nothing")) == 0
    assert feedback_dir(tmp_path, "digits") == tmp_path / "digits" / ".feedback"


def test_shards_rotate_at_the_size_limit(tmp_path):
    with FeedbackWriter(tmp_path, max_shard_bytes=1024) as writer:
        for i in range(20):
            writer.append(*_record(i))
    shards = list_shards(tmp_path)
    assert len(shards) > 3
    assert all(p.stat().st_size <= 1024 for p in shards)
    assert read_feedback(tmp_path).records == 20


def test_writers_continue_one_numbered_log(tmp_path):
    numbers = []
    for i in range(3):  # three writers one after another (restarts), one shard
        with FeedbackWriter(tmp_path) as writer:
            numbers.append(writer.append(*_record(i)))
    assert numbers == [range(1, 3), range(3, 5), range(5, 7)]
    assert [p.name for p in list_shards(tmp_path)] == ["shard-000000000001.tgfb"]
    data = read_feedback(tmp_path)
    assert data.sequences.tolist() == [1, 2, 3, 4, 5, 6] and last_sequence(tmp_path) == 6


def test_reading_after_a_number_opens_no_earlier_shard(tmp_path):
    with FeedbackWriter(tmp_path, max_shard_bytes=1024) as writer:
        for i in range(20):
            writer.append(*_record(i))  # rows 2i+1, 2i+2
    shards = list_shards(tmp_path)
    assert len(shards) > 3
    later = read_feedback(tmp_path, after=30)
    assert later.sequences.tolist() == list(range(31, 41))
    np.testing.assert_array_equal(later.labels, [i % 10 for i in range(15, 20) for _ in range(2)])
    containing_31 = [p.name for p in shards if int(p.name[6:18]) <= 31][-1]
    assert later.shards_read[0] == containing_31 and len(later.shards_read) < len(shards)
    window = read_feedback(tmp_path, after=4, through=9)  # cuts records in two
    assert window.sequences.tolist() == [5, 6, 7, 8, 9]
    assert len(read_feedback(tmp_path, after=40)) == 0


@pytest.mark.parametrize("cut", [1, 4, 9, 30])
def test_torn_tail_is_skipped_and_later_shards_still_read(tmp_path, cut):
    with FeedbackWriter(tmp_path) as writer:
        for i in range(3):
            writer.append(*_record(i))
        first = writer.shard
    size = first.stat().st_size
    with open(first, "r+b") as f:  # a crash in the middle of the third record
        f.truncate(size - cut)
    with FeedbackWriter(tmp_path) as writer:  # the restarted gateway: a new shard, not after the tear
        assert writer.append(*_record(7)) == range(5, 7)
    assert len(list_shards(tmp_path)) == 2
    data = read_feedback(tmp_path)
    assert data.records == 3 and data.torn_records == 1
    np.testing.assert_array_equal(data.labels, [0, 0, 1, 1, 7, 7])
    assert data.sequences.tolist() == [1, 2, 3, 4, 5, 6]


def test_zero_filled_tail_counts_as_torn(tmp_path):
    with FeedbackWriter(tmp_path) as writer:
        writer.append(*_record(1))
        shard = writer.shard
    data = shard.read_bytes()
    last_payload = 40
    shard.write_bytes(data[:-last_payload] + b"\0" * last_payload)
    assert read_feedback(tmp_path).records == 0
    assert read_feedback(tmp_path).torn_records == 1


def test_damage_before_the_tail_is_quarantined_and_the_rest_read(tmp_path):
    with FeedbackWriter(tmp_path) as writer:
        for i in range(3):
            writer.append(*_record(i))
        shard = writer.shard
    data = bytearray(shard.read_bytes())
    data[len(SHARD_MAGIC) + 20] ^= 0xFF  # inside the first record's payload
    shard.write_bytes(bytes(data))
    read = read_feedback(tmp_path)
    assert read.quarantined == 1 and read.torn_records == 0 and read.records == 2
    assert "no record" in read.quarantine_reasons[0]
    np.testing.assert_array_equal(read.labels, [1, 1, 2, 2])


def test_a_foreign_file_named_like_a_shard_is_quarantined(tmp_path):
    (tmp_path / "shard-00000001.tgfb").write_bytes(b"not a shard at all")
    with FeedbackWriter(tmp_path) as writer:
        writer.append(*_record(4))
    read = read_feedback(tmp_path)
    assert read.quarantined == 1 and "not a feedback shard" in read.quarantine_reasons[0]
    np.testing.assert_array_equal(read.labels, [4, 4])


def test_bad_records_are_refused_before_anything_is_written(tmp_path):
    writer = FeedbackWriter(tmp_path)
    with pytest.raises(FeedbackError, match="rows") as info:
        writer.append({"x": np.zeros((3, 4))}, np.zeros(2))
    assert info.value.status == 400
    with pytest.raises(FeedbackError, match="object"):
        writer.append({"x": np.array([[object()]])}, np.zeros(1))
    with pytest.raises(FeedbackError, match="batch"):
        writer.append({"x": np.zeros((1, 4))}, np.float32(1))
    writer.close()
    assert list_shards(tmp_path) == []


def test_records_of_another_schema_are_quarantined_and_the_majority_kept(tmp_path):
    # The defect of issue 11: two accepted feedbacks (labels INT64 [1], then FP32 [1, 3])
    # made every later read raise "records have inconsistent shapes".
    with FeedbackWriter(tmp_path) as writer:
        writer.append({"x": np.zeros((1, 4), np.float32)}, np.zeros(1, np.int64))
        writer.append({"x": np.zeros((1, 4), np.float32)}, np.zeros((1, 3), np.float32))
        writer.append({"x": np.ones((2, 4), np.float32)}, np.ones(2, np.int64))
        writer.append({"x": np.zeros((1, 5), np.float32)}, np.zeros(1, np.int64))  # other shape
        writer.append({"y": np.zeros((1, 4), np.float32)}, np.zeros(1, np.int64))  # other name
        writer.append({"x": np.zeros((1, 4), np.float64)}, np.zeros(1, np.int64))  # other dtype
    read = read_feedback(tmp_path)
    assert read.records == 2 and read.quarantined == 4
    assert read.labels.tolist() == [0, 1, 1] and read.inputs["x"].dtype == np.float32
    assert any("float32[3]" in reason for reason in read.quarantine_reasons)
    assert list(read.inputs) == ["x"]


def test_the_schema_with_the_most_rows_wins_even_when_it_came_later(tmp_path):
    with FeedbackWriter(tmp_path) as writer:
        writer.append({"x": np.zeros((1, 5), np.float32)}, np.zeros(1, np.int64))
        for i in range(3):
            writer.append(*_record(i))
    read = read_feedback(tmp_path)
    assert read.quarantined == 1 and read.labels.tolist() == [0, 0, 1, 1, 2, 2]


def _append_many(directory: str, start: int) -> None:
    with FeedbackWriter(directory, max_shard_bytes=2048) as writer:
        for i in range(start, start + 25):
            writer.append(*_record(i, rows=1))


def test_concurrent_writer_processes_lose_nothing(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), s)) for s in (0, 100, 200)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    data = read_feedback(tmp_path)
    assert sorted(data.inputs["x"][:, 0].astype(int)) == [*range(25), *range(100, 125), *range(200, 225)]
    assert data.sequences.tolist() == list(range(1, 76))  # distinct, increasing, no gaps
    for start in (0, 100, 200):  # each writer's rows were numbered in the order it wrote them
        mine = data.sequences[(data.inputs["x"][:, 0] >= start) & (data.inputs["x"][:, 0] < start + 25)]
        assert np.all(np.diff(mine) > 0)


def test_records_survive_the_writer_being_killed(tmp_path):
    # Every append that returned must be readable after SIGKILL: the child prints after
    # each append, and we kill it at an arbitrary point.
    script = textwrap.dedent(f"""
        import sys, numpy as np
        from model_repo.feedback import FeedbackWriter
        w = FeedbackWriter({str(tmp_path)!r}, max_shard_bytes=4096)
        i = 0
        while True:
            w.append({{"x": np.full((1, 4), i, np.float32)}}, np.array([i]))
            print(i, flush=True)
            i += 1
    """)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    acknowledged = -1
    for line in proc.stdout:
        acknowledged = int(line)
        if acknowledged >= 40:
            break
    proc.kill()
    proc.wait()
    data = read_feedback(tmp_path)
    assert len(data) >= acknowledged + 1
    np.testing.assert_array_equal(data.labels[: acknowledged + 1], np.arange(acknowledged + 1))


def test_a_sequence_bound_pins_what_is_read_while_appends_go_on(tmp_path):
    writer = FeedbackWriter(tmp_path, max_shard_bytes=700)
    for i in range(3):
        writer.append(*_record(i))
    pinned = last_sequence(tmp_path)
    before = read_feedback(tmp_path, through=pinned)
    for i in range(3, 9):  # more records, and new shards by rotation
        writer.append(*_record(i))
    writer.close()
    again = read_feedback(tmp_path, through=pinned)
    assert pinned == 6 and again.records == before.records == 3
    np.testing.assert_array_equal(again.inputs["x"], before.inputs["x"])
    assert read_feedback(tmp_path).records == 9


def test_a_store_from_before_sequence_numbers_reads_as_row_zero(tmp_path):
    from model_repo.feedback_format import encode_record

    legacy = tmp_path / "shard-00000001.tgfb"  # an older writer's naming, records without "seq"
    legacy.write_bytes(SHARD_MAGIC + encode_record({"in:x": np.zeros((2, 4), np.float32),
                                                    "label": np.zeros(2, np.int64)}, 1.0))
    with FeedbackWriter(tmp_path) as writer:
        assert writer.append(*_record(3)) == range(1, 3)
    data = read_feedback(tmp_path)
    assert data.sequences.tolist() == [0, 0, 1, 2] and data.quarantined == 0
    assert read_feedback(tmp_path, after=0).sequences.tolist() == [1, 2]
