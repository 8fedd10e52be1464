"""The trainer's feedback loader uses what the store can give and says in the job's log what
it quarantined (issue 11: one bad record made every ``--data feedback:`` job fail forever)."""

from __future__ import annotations

import numpy as np
import pytest

from model_repo.feedback import FeedbackWriter, feedback_dir
from trainer.data import load_data
from trainer.errors import DataError


def test_a_poisoned_store_trains_on_its_good_records_and_logs_the_rest(tmp_path, capsys):
    store = feedback_dir(tmp_path, "m")
    with FeedbackWriter(store) as writer:
        writer.append({"X": np.zeros((1, 4), np.float32)}, np.array([1], np.int64))
        writer.append({"X": np.zeros((1, 4), np.float32)}, np.zeros((1, 3), np.float32))  # the old poison
        writer.append({"X": np.ones((2, 4), np.float32)}, np.array([0, 2], np.int64))
    data = load_data(["feedback:"], repo_root=tmp_path, model="m")
    assert data.y.tolist() == [1, 0, 2] and data.x.shape == (3, 4)
    out = capsys.readouterr().out
    assert "1 records quarantined" in out and "3 used" not in out and "2 used" in out
    assert "float32[3]" in out


def test_a_store_with_only_quarantined_records_says_so(tmp_path):
    store = feedback_dir(tmp_path, "m")
    store.mkdir(parents=True)
    (store / "shard-00000001.tgfb").write_bytes(b"not a shard")
    with pytest.raises(DataError, match="holds no records but 1 quarantined"):
        load_data(["feedback:"], repo_root=tmp_path, model="m")
