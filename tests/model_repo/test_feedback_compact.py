"""Feedback retention: compaction keeps the policy's bounds, every kept row's number and content,
a balanced reservoir of every era, and a readable store after a kill -9 at any step."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from model_repo.feedback import FeedbackWriter, last_sequence, list_shards, read_feedback
from model_repo.feedback_compact import FeedbackPolicy, compact_feedback, store_rows_by_kind
from model_repo.feedback_format import first_sequence, shard_kind
from model_repo.feedback_read import FeedbackScan, shards_for
from model_repo.feedback_sample import choose_replay

ROOT = Path(__file__).resolve().parents[2]
POLICY = FeedbackPolicy(max_rows=1000, max_bytes=1 << 30, max_age_seconds=1e9, recent_rows=500,
                        reservoir_rows=200, eras=4)
NOW = 10_000.0


def _fill(directory: Path, records: int = 400, rows: int = 5, start: int = 0) -> None:
    """Four distributions in turn (100 records each), each with its own three classes; every
    row's features are its record's number, so content can be checked against its number."""
    with FeedbackWriter(directory, max_shard_bytes=20_000) as writer:
        for i in range(start, start + records):
            era = (i // 100) % 4
            writer.append({"x": np.full((rows, 8), i, np.float32)}, np.arange(rows) % 3 + era * 3,
                          timestamp=1000.0 + i)


def _check_intact(directory: Path) -> np.ndarray:
    """Every row once, its content its own, and each shard's rows below the next shard's name."""
    data = read_feedback(directory)
    assert np.unique(data.sequences).size == len(data), "a row is present twice"
    # Row k of record i has number 5 * i + k + 1 (records of 5 rows, numbered from 1).
    np.testing.assert_array_equal(data.inputs["x"][:, 0], (data.sequences - 1) // 5)
    np.testing.assert_array_equal(data.timestamps, 1000.0 + (data.sequences - 1) // 5)
    shards = [p for p in list_shards(directory) if first_sequence(p) > 0]
    for shard, nxt in zip(shards, shards[1:]):
        held = read_feedback(directory, through=first_sequence(nxt) - 1)
        assert shard.name in held.shards_read
    for after in (0, 700, 1500, 1990):
        part = read_feedback(directory, after=after)
        np.testing.assert_array_equal(part.sequences, data.sequences[data.sequences > after])
        assert set(part.shards_read) <= {p.name for p in shards_for(directory, after)}
    return data.sequences


def test_within_the_policy_nothing_changes(tmp_path):
    _fill(tmp_path, records=50)
    before = sorted(p.name for p in list_shards(tmp_path))
    report = compact_feedback(tmp_path, POLICY, now=NOW)
    assert not report["compacted"] and report["reason"] == "within the policy"
    assert sorted(p.name for p in list_shards(tmp_path)) == before


def test_compaction_keeps_the_bounds_recent_rows_whole_and_every_number(tmp_path):
    _fill(tmp_path)
    newest = list_shards(tmp_path)[-1]
    report = compact_feedback(tmp_path, POLICY, now=NOW)
    assert report["compacted"], report
    seqs = _check_intact(tmp_path)
    assert len(seqs) <= POLICY.max_rows * POLICY.low_water
    cutoff = report["cutoff"]
    np.testing.assert_array_equal(seqs[seqs > cutoff], np.arange(cutoff + 1, 2001))  # recent: whole
    assert (seqs > cutoff).sum() <= POLICY.recent_rows
    assert (seqs <= cutoff).sum() == POLICY.reservoir_rows == report["replay_rows"]
    assert newest.exists() and newest.read_bytes()  # numbering continues from it, untouched
    assert store_rows_by_kind(tmp_path) == {"recent": 2000 - cutoff, "replay": POLICY.reservoir_rows}
    kinds = {p.name: shard_kind(p) for p in list_shards(tmp_path)}
    assert list(kinds.values()).count("replay") == 1
    with FeedbackWriter(tmp_path) as writer:  # appends go on numbering after the last row
        assert writer.append({"x": np.zeros((1, 8), np.float32)}, np.zeros(1, np.int64)) == range(2001, 2002)


def test_age_and_bytes_bound_the_recent_rows(tmp_path):
    _fill(tmp_path)
    aged = FeedbackPolicy(max_rows=10_000, max_bytes=1 << 30, max_age_seconds=100.0, recent_rows=5000,
                          reservoir_rows=100)
    report = compact_feedback(tmp_path, aged, now=1000.0 + 400)  # rows of records 300.. are young
    assert report["compacted"], report
    data = read_feedback(tmp_path)
    recent = data.sequences > report["cutoff"]
    assert data.timestamps[recent].min() >= 1000.0 + 300 - 20  # the newest shard may hold a little older
    size = sum(p.stat().st_size for p in list_shards(tmp_path))
    small = FeedbackPolicy(max_rows=10_000, max_bytes=size // 2, max_age_seconds=1e9, recent_rows=5000,
                           reservoir_rows=100)
    assert compact_feedback(tmp_path, small, now=NOW)["compacted"]
    assert sum(p.stat().st_size for p in list_shards(tmp_path)) <= size // 2
    _check_intact(tmp_path)


def test_the_reservoir_is_balanced_over_eras_and_classes_and_survives_recompaction(tmp_path):
    _fill(tmp_path)
    report = compact_feedback(tmp_path, POLICY, now=NOW)
    data = read_feedback(tmp_path)
    replay = data.sequences <= report["cutoff"]
    labels = data.labels[replay]
    # Distributions 0..2 lie wholly before the cutoff (1500 = record 300): each keeps a voice,
    # and its three classes share its rows evenly.
    counts = np.bincount(labels, minlength=12)
    for era in range(3):
        assert counts[era * 3:era * 3 + 3].sum() >= 40
        assert counts[era * 3:era * 3 + 3].max() - counts[era * 3:era * 3 + 3].min() <= 6
    # New data: the old reservoir is thinned again with the new old rows, every era still there.
    _fill(tmp_path, records=400, start=400)
    report = compact_feedback(tmp_path, POLICY, now=NOW)
    assert report["compacted"]
    data = read_feedback(tmp_path)
    old = data.labels[data.sequences <= report["cutoff"]]
    assert set(np.unique(old) // 3) == {0, 1, 2, 3}
    assert (data.sequences <= report["cutoff"]).sum() <= POLICY.reservoir_rows
    _check_intact(tmp_path)


def test_replay_choice_reads_a_bounded_part_of_a_large_store(tmp_path):
    _fill(tmp_path)
    chosen = choose_replay(tmp_path, through=1500, rows=50, seed=1)
    assert len(chosen) == 50 and chosen.max() <= 1500
    assert np.array_equal(chosen, choose_replay(tmp_path, through=1500, rows=50, seed=1))
    data = read_feedback(tmp_path, sequences=chosen)
    np.testing.assert_array_equal(data.sequences, chosen)
    assert len(data.shards_read) < len(list_shards(tmp_path))


APPENDER = textwrap.dedent("""
    import json, sys, numpy as np
    from model_repo.feedback import FeedbackWriter
    directory, out, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    acked = []
    with FeedbackWriter(directory, max_shard_bytes=20_000) as writer:
        for i in range(count):
            r = writer.append({"x": np.full((5, 8), 400 + i, np.float32)}, np.arange(5) % 3,
                              timestamp=1000.0 + 400 + i)
            acked += list(r)
    json.dump(acked, open(out, "w"))
""")


def test_appends_from_another_process_go_on_during_compaction(tmp_path):
    store = tmp_path / "store"
    _fill(store)
    out = tmp_path / "acked.json"
    appender = subprocess.Popen([sys.executable, "-c", APPENDER, str(store), str(out), "600"], cwd=ROOT)
    scan = FeedbackScan(store)
    cutoffs = []
    while appender.poll() is None:
        report = compact_feedback(store, POLICY, now=NOW)
        if report["compacted"]:
            cutoffs.append(report["cutoff"])
        scan.update()
    assert appender.wait() == 0 and cutoffs
    acked = np.array(json.loads(out.read_text()))
    seqs = _check_intact(store)
    assert acked.min() == 2001 and acked.max() == last_sequence(store)
    assert np.isin(acked[acked > max(cutoffs)], seqs).all()  # every acknowledged row the policy keeps
    scan.update()
    assert scan.rows == len(seqs)


KILLER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from model_repo.feedback_compact import FeedbackPolicy, compact_feedback
    step = sys.argv[2]

    def on_step(name):
        if name == step:
            os.kill(os.getpid(), signal.SIGKILL)

    policy = FeedbackPolicy(max_rows=1000, max_bytes=1 << 30, max_age_seconds=1e9, recent_rows=500,
                            reservoir_rows=200, eras=4)
    compact_feedback(Path(sys.argv[1]), policy, now=10_000.0, on_step=on_step)
""")


@pytest.fixture(scope="module")
def compacted_reference(tmp_path_factory):
    """A store before compaction, and the rows one compaction keeps of it."""
    template = tmp_path_factory.mktemp("template") / "store"
    _fill(template)
    reference = template.parent / "reference"
    shutil.copytree(template, reference)
    compact_feedback(reference, POLICY, now=NOW)
    return template, read_feedback(reference).sequences


@pytest.mark.parametrize("step", ["planned", "writing", "written", "journaled", "renamed", "removed"])
def test_a_kill_9_at_any_step_leaves_every_kept_row_once(tmp_path, compacted_reference, step):
    template, kept = compacted_reference
    store = tmp_path / "store"
    shutil.copytree(template, store)
    done = subprocess.run([sys.executable, "-c", KILLER, str(store), step], cwd=ROOT)
    assert done.returncode == -9  # a real SIGKILL, at that step
    seqs = _check_intact(store)  # the reader finishes a committed swap
    assert np.isin(kept, seqs).all()
    if step in ("journaled", "renamed", "removed"):
        np.testing.assert_array_equal(seqs, kept)  # committed: exactly the compacted store
    else:
        np.testing.assert_array_equal(seqs, np.arange(1, 2001))  # not committed: as it was
    report = compact_feedback(store, POLICY, now=NOW)  # the next compaction cleans up
    assert not list(store.glob(".compact-*")) and not (store / ".compaction.json").exists()
    np.testing.assert_array_equal(read_feedback(store).sequences, kept)
    assert report["compacted"] == (step not in ("journaled", "renamed", "removed"))
    with FeedbackWriter(store) as writer:
        assert writer.append({"x": np.zeros((1, 8), np.float32)}, np.zeros(1, np.int64)).start == 2001


def test_policy_from_settings_and_refusals():
    class Settings:
        feedback_max_rows, feedback_max_bytes, feedback_max_age_seconds = 10, 1 << 20, 60.0
        feedback_recent_rows, replay_reservoir_rows = 5, 3

    policy = FeedbackPolicy.from_settings(Settings())
    assert (policy.max_rows, policy.max_bytes, policy.recent_rows, policy.reservoir_rows) == (10, 1 << 20, 5, 3)
    with pytest.raises(ValueError):
        FeedbackPolicy(max_rows=0)
    with pytest.raises(ValueError):
        FeedbackPolicy(low_water=1.5)


def test_a_compacted_store_is_not_compacted_again_until_it_grows(tmp_path):
    _fill(tmp_path)
    assert compact_feedback(tmp_path, POLICY, now=NOW)["compacted"]
    _fill(tmp_path, records=10, start=400)  # 50 rows more: still within every bound
    assert compact_feedback(tmp_path, POLICY, now=NOW)["reason"] == "within the policy"


def test_a_store_in_one_shard_is_sealed_then_compacted_and_appends_go_on(tmp_path):
    # Every row in the shard appends go to (the default shard size is 64 MiB): compaction
    # starts a new newest shard first, as a writer would, then rewrites the old one.
    with FeedbackWriter(tmp_path) as writer:
        for i in range(400):
            writer.append({"x": np.full((5, 8), i, np.float32)}, np.arange(5) % 3, timestamp=1000.0 + i)
        assert len(list_shards(tmp_path)) == 1
        report = compact_feedback(tmp_path, POLICY, now=NOW)
        assert report["compacted"], report
        seqs = _check_intact(tmp_path)
        assert len(seqs) <= POLICY.max_rows * POLICY.low_water and seqs.max() == 2000
        assert writer.append({"x": np.full((5, 8), 400, np.float32)}, np.arange(5) % 3,
                             timestamp=1400.0) == range(2001, 2006)
    assert read_feedback(tmp_path, after=2000).sequences.tolist() == list(range(2001, 2006))
