"""A job's bounded mix of its model's feedback: rows since the base's snapshot, a balanced replay
sample of older ones, the golden set; recorded in the data snapshot; never the whole store."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from model_repo.feedback import FeedbackWriter, feedback_dir, last_sequence, list_shards
from model_repo.feedback_compact import FeedbackPolicy, compact_feedback
from trainer.data import load_data, split_validation
from trainer.errors import DataError
from trainer.mix import golden_path, plan_mix
from trainer.options import add_job_arguments, to_argv, validate
from trainer.snapshot import data_snapshot


@pytest.fixture
def store(tmp_path):
    """Model ``m``'s store: 2000 rows in four eras of 500, each with its own three classes;
    each row's feature is its own sequence number."""
    directory = feedback_dir(tmp_path, "m")
    with FeedbackWriter(directory, max_shard_bytes=8_000) as writer:
        for i in range(400):
            seq = np.arange(5 * i + 1, 5 * i + 6, dtype=np.float32)
            writer.append({"x": np.repeat(seq[:, None], 4, axis=1)}, np.arange(5) % 3 + (i // 100) * 3,
                          timestamp=1000.0 + i)
    return directory


def _load(tmp_path, mix):
    store = feedback_dir(tmp_path, "m")
    return load_data(["feedback:"], repo_root=tmp_path, model="m",
                     through={str(store): last_sequence(store)}, mix=mix)


def test_a_first_job_reads_every_row_within_the_budget(tmp_path, store):
    mix = plan_mix(store, through=2000, base_through=None, max_rows=20_000, replay_fraction=0.3,
                   golden=None, seed=0)
    assert mix.after == 0 and mix.replay == []
    data = _load(tmp_path, mix)
    assert data.seq.tolist() == list(range(1, 2001))


def test_a_later_job_reads_new_rows_a_balanced_replay_sample_and_the_golden_set(tmp_path, store):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "m" / "anchor.npz", x=rng.random((40, 4), dtype=np.float32), label=np.arange(40) % 12)
    golden = golden_path(tmp_path, "m", None, disabled=False)
    mix = plan_mix(store, through=2000, base_through=1500, max_rows=20_000, replay_fraction=0.3,
                   golden=golden, seed=0)
    data = _load(tmp_path, mix)
    recent, replay = data.seq[data.seq > 1500], data.seq[(data.seq > 0) & (data.seq <= 1500)]
    assert recent.tolist() == list(range(1501, 2001))
    assert len(replay) == round(500 * 0.3 / 0.7) == len(set(replay.tolist()))
    np.testing.assert_array_equal(data.x[data.seq > 0, 0], data.seq[data.seq > 0])  # the rows asked for
    assert (data.seq == -1).sum() == 40  # the golden set
    classes = np.bincount(data.y[(data.seq > 0) & (data.seq <= 1500)], minlength=9)[:9]
    assert classes.min() >= 15  # every earlier era and class rehearsed
    train, val = split_validation(data, 0.2, seed=0)
    snap = data_snapshot(train, val)["feedback"]
    assert snap["through"] == 2000 and snap["rows"] == 500 + len(replay)
    assert snap["mix"]["recent"] == {"after": 1500, "through": 2000, "rows": 500}
    assert snap["mix"]["replay"]["rows"] == len(replay) and snap["mix"]["base_through"] == 1500
    assert sum(n for _, _, n in snap["mix"]["replay"]["eras"]) == len(replay)
    assert snap["mix"]["golden"]["rows"] == 40 and snap["mix"]["golden"]["digest"].startswith("sha256:")


def test_the_row_budget_bounds_a_job_whatever_the_stores_size(tmp_path, store):
    mix = plan_mix(store, through=2000, base_through=None, max_rows=300, replay_fraction=0.3,
                   golden=None, seed=0)
    data = _load(tmp_path, mix)
    assert len(data) <= 300
    assert data.seq.max() == 2000 and (data.seq > mix.after).sum() == 210  # the newest rows whole
    assert data.seq.min() <= 500  # and the first era rehearsed


def test_replay_comes_from_the_reservoir_after_compaction_and_reads_few_shards(tmp_path, store):
    policy = FeedbackPolicy(max_rows=1200, max_bytes=1 << 30, max_age_seconds=1e9, recent_rows=600,
                            reservoir_rows=300, eras=4)
    assert compact_feedback(store, policy, now=10_000.0)["compacted"]
    mix = plan_mix(store, through=2000, base_through=1900, max_rows=20_000, replay_fraction=0.5,
                   golden=None, seed=0)
    assert len(mix.replay) == 100 and max(mix.replay) <= 1900
    data = _load(tmp_path, mix)
    assert len(data) == 200 and np.unique(data.seq).size == 200


def test_a_replay_row_compacted_away_after_planning_is_refused(tmp_path, store):
    mix = plan_mix(store, through=2000, base_through=1500, max_rows=20_000, replay_fraction=0.3,
                   golden=None, seed=0)
    policy = FeedbackPolicy(max_rows=1000, max_bytes=1 << 30, max_age_seconds=1e9, recent_rows=500,
                            reservoir_rows=20, eras=4)
    compact_feedback(store, policy, now=10_000.0)
    with pytest.raises(DataError, match="compacted away"):
        _load(tmp_path, mix)
    assert len(list_shards(store)) >= 2


def test_the_options_round_trip_and_are_checked():
    parser = argparse.ArgumentParser()
    add_job_arguments(parser)
    args = parser.parse_args(["--repo", "r", "--model", "m", "--data", "feedback:", "--max-rows", "500",
                              "--replay-fraction", "0.5", "--no-golden"])
    assert to_argv(args)[-5:] == ["--max-rows", "500", "--replay-fraction", "0.5", "--no-golden"]
    validate(args)
    args.replay_fraction = 1.0
    with pytest.raises(DataError, match="replay-fraction"):
        validate(args)
