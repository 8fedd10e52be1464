"""Trainer pieces that need no Horovod: data formats, sharding, gate, schedule, checkpoints,
the rank-consistency digests, Horovod's knobs and its timeline."""

from __future__ import annotations

import numpy as np
import pytest

from model_repo.feedback import FeedbackWriter, feedback_dir, last_sequence
from trainer import checkpoint as ckpt
from trainer.data import Dataset, epoch_batches, feedback_stores, load_data, shard, split_validation, steps_per_epoch
from trainer.errors import DataError, TrainerError
from trainer.gate import Gate
from trainer.schedule import learning_rate


@pytest.fixture
def small(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 16, size=(30, 3)).astype(np.float32)
    y = rng.integers(0, 4, size=30)
    return x, y


def test_npz_csv_parquet_and_feedback_give_the_same_arrays_and_digest(tmp_path, small):
    import pyarrow as pa
    import pyarrow.parquet as pq

    x, y = small
    np.savez(tmp_path / "d.npz", pixels=x, target=y)
    columns = {"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "target": y}
    (tmp_path / "d.csv").write_text("a,b,c,target\n" + "".join(
        f"{r[0]:g},{r[1]:g},{r[2]:g},{t}\n" for r, t in zip(x, y)))
    pq.write_table(pa.table(columns), tmp_path / "d.parquet")
    with FeedbackWriter(tmp_path / "fb", max_shard_bytes=600) as writer:
        for i in range(0, 30, 7):
            writer.append({"pixels": x[i:i + 7]}, y[i:i + 7])
    loaded = [
        load_data([str(tmp_path / "d.npz")], features=["pixels"], label="target"),
        load_data([str(tmp_path / "d.csv")], features=["a", "b", "c"], label="target"),
        load_data([str(tmp_path / "d.parquet")], label="target"),  # features: all but the label
        load_data([str(tmp_path / "fb")]),
    ]
    for data in loaded:
        np.testing.assert_array_equal(data.x, x)
        np.testing.assert_array_equal(data.y, y)
    assert len({d.digest for d in loaded}) == 1


def test_feedback_scheme_reads_the_models_default_store(tmp_path, small):
    x, y = small
    with FeedbackWriter(tmp_path / "digits" / ".feedback") as writer:
        writer.append({"pixels": x}, y)
    assert len(load_data(["feedback:"], repo_root=tmp_path, model="digits")) == 30
    with pytest.raises(DataError, match="holds no records"):
        load_data(["feedback:"], repo_root=tmp_path, model="other")


def test_feedback_snapshot_pins_the_training_data(tmp_path, small):
    x, y = small
    store = feedback_dir(tmp_path, "m")
    with FeedbackWriter(store) as writer:
        writer.append({"pixels": x[:10]}, y[:10])
        stores = feedback_stores(["feedback:"], repo_root=tmp_path, model="m")
        pinned = {str(s): last_sequence(s) for s in stores}
        writer.append({"pixels": x[10:20]}, y[10:20])
    assert stores == [store] and pinned == {str(store): 10}
    data = load_data(["feedback:"], repo_root=tmp_path, model="m", through=pinned)
    assert len(data) == 10 and data.seq.tolist() == list(range(1, 11))
    assert len(load_data(["feedback:"], repo_root=tmp_path, model="m")) == 20


def test_the_data_snapshot_records_the_range_read_and_the_rows_held_out(tmp_path, small):
    from trainer.data import split_validation
    from trainer.snapshot import data_snapshot

    x, y = small
    np.savez(tmp_path / "extra.npz", x=x[:5], y=y[:5])
    with FeedbackWriter(feedback_dir(tmp_path, "m")) as writer:
        writer.append({"pixels": x}, y)
    data = load_data(["feedback:", str(tmp_path / "extra.npz")], repo_root=tmp_path, model="m",
                     through={str(feedback_dir(tmp_path, "m")): 30})
    train, val = split_validation(data, 0.2, seed=0)
    snap = data_snapshot(train, val)
    held = sorted(int(s) for s in val.seq if s >= 0)
    assert snap["feedback"]["through"] == 30 and snap["feedback"]["first"] == 1 and snap["feedback"]["rows"] == 30
    assert [n for a, b in snap["feedback"]["held_out"] for n in range(a, b + 1)] == held
    assert list(snap["files"]) == [str(tmp_path / "extra.npz")] and snap["other_stores"] == []


def test_data_errors_name_the_file_and_the_problem(tmp_path, small):
    x, y = small
    np.savez(tmp_path / "d.npz", x=x, y=y[:10])
    with pytest.raises(DataError, match="not found"):
        load_data([str(tmp_path / "missing.csv")])
    with pytest.raises(DataError, match=r"no array named \['pixels'\]"):
        load_data([str(tmp_path / "d.npz")], features=["pixels"])
    with pytest.raises(DataError, match="30 feature rows but 10 labels"):
        load_data([str(tmp_path / "d.npz")])
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(DataError, match="unsupported data format"):
        load_data([str(tmp_path / "d.txt")])
    (tmp_path / "d.csv").write_text("a,label\n1,2\n")
    with pytest.raises(DataError, match=r"no column named \['b'\]"):
        load_data([str(tmp_path / "d.csv")], features=["b"])


def test_shards_are_disjoint_cover_the_data_and_take_equal_steps(small):
    x, y = small
    data = Dataset(x, y, [])
    train, val = split_validation(data, 0.2, seed=3)
    assert len(val) == 6 and len(train) == 24
    parts = [shard(train, r, 3, seed=1) for r in range(3)]
    rows = sorted(tuple(r) for p in parts for r in p.x)
    assert rows == sorted(tuple(r) for r in train.x)
    assert steps_per_epoch(len(train), 3, batch_size=4) == 2
    a = [b[1].tolist() for b in epoch_batches(parts[0], batch_size=4, steps=2, seed=1, rank=0, epoch=0)]
    b = [b[1].tolist() for b in epoch_batches(parts[0], batch_size=4, steps=2, seed=1, rank=0, epoch=1)]
    assert len(a) == 2 and a != b  # reshuffled every epoch
    with pytest.raises(DataError, match="cannot be split"):
        steps_per_epoch(2, 3, batch_size=4)


def test_gate_directions_and_parsing():
    loss = Gate.parse("loss:+0.0")
    assert loss.decide({"loss": 1.0}, {"loss": 1.0})["passed"]
    assert not loss.decide({"loss": 1.0}, {"loss": 1.01})["passed"]
    assert not loss.decide({"loss": 1.0}, {"loss": float("nan")})["passed"]
    acc = Gate.parse("accuracy:+0.05")
    assert acc.decide({"accuracy": 0.80}, {"accuracy": 0.86})["passed"]
    assert not acc.decide({"accuracy": 0.80}, {"accuracy": 0.84})["passed"]
    assert Gate.parse("accuracy:-0.01").decide({"accuracy": 0.8}, {"accuracy": 0.795})["passed"]
    for bad in ("f1:+0.1", "loss:abc"):
        with pytest.raises(DataError):
            Gate.parse(bad)


def test_learning_rate_warms_up_to_the_scaled_rate():
    assert learning_rate(0.1, 4, 0, 10) == pytest.approx(0.1)
    assert learning_rate(0.1, 4, 5, 10) == pytest.approx(0.25)
    assert learning_rate(0.1, 4, 10, 10) == pytest.approx(0.4)
    assert learning_rate(0.1, 4, 50, 0) == pytest.approx(0.4)
    assert learning_rate(0.1, 4, 50, 10, scale=False) == pytest.approx(0.1)


def test_checkpoint_round_trip_and_fingerprint_guard(tmp_path):
    fp = ckpt.fingerprint(model="m", version=1)
    assert ckpt.load(tmp_path, fp) is None
    weights = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(3, np.float32)]
    ckpt.save(tmp_path, ckpt.Checkpoint(2, fp, [{"epoch": 1}, {"epoch": 2}], weights, [np.int64(7)]))
    loaded = ckpt.load(tmp_path, fp)
    assert loaded.epoch == 2 and loaded.history[-1] == {"epoch": 2}
    np.testing.assert_array_equal(loaded.weights[0], weights[0])
    assert int(loaded.optimizer[0]) == 7
    with pytest.raises(TrainerError, match="different run"):
        ckpt.load(tmp_path, ckpt.fingerprint(model="m", version=2))


def test_differing_variables_names_exactly_the_ones_whose_digests_differ():
    from trainer.sync import DIGEST_BYTES, differing_variables

    names = ["dense/kernel", "bn/moving_mean", "bn/moving_variance"]
    same = np.arange(DIGEST_BYTES * (1 + len(names)), dtype=np.uint8)
    other = same.copy()
    other[DIGEST_BYTES * 2] ^= 1  # bn/moving_mean's first byte
    assert differing_variables(names, np.stack([same, same])) == []
    assert differing_variables(names, np.stack([same, other, same])) == ["bn/moving_mean"]


def test_horovod_knobs_become_its_environment(monkeypatch):
    from trainer.distributed import configure_horovod

    monkeypatch.delenv("HOROVOD_CYCLE_TIME", raising=False)
    monkeypatch.delenv("HOROVOD_FUSION_THRESHOLD", raising=False)
    configure_horovod(2.5, 32)
    import os

    assert os.environ["HOROVOD_CYCLE_TIME"] == "2.5"
    assert os.environ["HOROVOD_FUSION_THRESHOLD"] == str(32 * 1024 * 1024)


def test_timeline_spans_split_negotiation_from_the_exchange(tmp_path):
    from trainer.timeline import collectives

    # As Horovod leaves it while running: a list not yet closed, with a trailing comma.
    (tmp_path / "t.json").write_text('[\n{"name": "process_name", "ph": "M", "pid": 1},\n'
                                     '{"ph": "B", "name": "NEGOTIATE_ALLREDUCE", "ts": 0, "pid": 1},'
                                     '{"ph": "E", "ts": 3000, "pid": 1},'
                                     '{"ph": "B", "name": "ALLREDUCE", "ts": 3000, "pid": 1},'
                                     '{"ph": "B", "name": "GLOO_ALLREDUCE", "ts": 3500, "pid": 1},'
                                     '{"ph": "E", "ts": 4500, "pid": 1},{"ph": "E", "ts": 5000, "pid": 1},')
    ops = collectives(tmp_path / "t.json")
    assert ops["NEGOTIATE_ALLREDUCE"] == {"count": 1, "ms": 3.0, "median_ms": 3.0}
    assert ops["ALLREDUCE"] == {"count": 1, "ms": 2.0, "median_ms": 2.0}
    assert ops["GLOO_ALLREDUCE (inside)"] == {"count": 1, "ms": 1.0, "median_ms": 1.0}
    (tmp_path / "empty.json").write_text('[\n{"name": "process_name", "ph": "M", "pid": 0},\n')
    assert collectives(tmp_path / "empty.json") == {}
