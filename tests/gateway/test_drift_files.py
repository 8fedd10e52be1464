"""Live drift counts shared between processes: each writes its own file, everyone sums."""

from __future__ import annotations

import json
import os
import time

import numpy as np

from gateway.loop.drift_files import STALE_WINDOWS, read_windows, write_window
from model_repo.drift import compare, summarise


def test_two_instances_counts_merge_and_only_comparable_ones_count(tmp_path):
    rng = np.random.default_rng(0)
    reference = summarise(rng.normal(size=(2000, 3)))
    a, b = reference.bin(rng.normal(size=(150, 3)) + 2), reference.bin(rng.normal(size=(150, 3)) + 2)
    write_window(tmp_path, "a", 1, 6.0, {10: a, 11: a})
    write_window(tmp_path, "b", 1, 6.0, {9: b, 11: b})  # slot 9 has left the window
    write_window(tmp_path, "old-reference", 2, 6.0, {11: a})
    write_window(tmp_path, "other-slots", 1, 3.0, {11: a})
    (tmp_path / "torn.json").write_text("{not json")
    read = dict(exclude="", reference=1, slot_seconds=6.0, first_slot=10, shape=reference.counts.shape,
                window_seconds=60.0)
    total, counted = read_windows(tmp_path, **read)
    assert counted == 2
    np.testing.assert_array_equal(total, 2 * a + b)
    # A process leaves its own file out (it adds its live counts instead).
    np.testing.assert_array_equal(read_windows(tmp_path, **{**read, "exclude": "a"})[0], b)
    # Both instances see the same score from the same files.
    assert compare(reference, total).score > 1.0 and compare(reference, total).rows == 450


def test_a_long_dead_process_file_is_removed(tmp_path):
    reference = summarise(np.arange(100.0)[:, None])
    write_window(tmp_path, "dead", 1, 6.0, {10: reference.counts})
    stale = json.loads((tmp_path / "dead.json").read_text())
    stale["written_at"] = time.time() - STALE_WINDOWS * 60.0 - 1
    (tmp_path / "dead.json").write_text(json.dumps(stale))
    total, counted = read_windows(tmp_path, exclude="", reference=1, slot_seconds=6.0, first_slot=0,
                                  shape=reference.counts.shape, window_seconds=60.0)
    assert counted == 0 and total.sum() == 0 and not os.path.exists(tmp_path / "dead.json")
