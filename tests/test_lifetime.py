"""The lifetime benchmark's short version (bench/lifetime.py, K = 4 on the digits model with
small retention bounds): whatever the loop writes each cycle stays bounded once the bounds
bind, and no client request fails. It asserts bounds, never speed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("lifetime_bench", ROOT / "bench" / "lifetime.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BOUNDS = {"feedback_max_rows": 500, "feedback_recent_rows": 200, "replay_reservoir_rows": 150,
          "train_max_rows": 400, "keep_versions": 1, "keep_jobs": 1, "capture_max_requests": 1000,
          "options": ["--epochs", "20", "--lr", "0.005"]}


def test_four_cycles_stay_bounded(tmp_path):
    bench = _bench()
    rows = bench.run(tmp_path / "lifetime", 4, trigger_samples=160, label_batch=40, overrides=BOUNDS,
                     schedule=["rot90", "rot180", "rot90", "mirror"], log=print)
    assert len(rows) == 4
    assert rows[-1]["failed"] == 0 and rows[-1]["requests"] > 0
    assert sum(r["jobs"]["started"] for r in rows) >= 2  # the loop did run
    for row in rows:
        # What the bounds allow, with room for what arrives between two retention passes: a
        # store, versions or files growing with the cycles would pass these by cycle 4.
        assert row["versions"] <= 3 + BOUNDS["keep_versions"], row
        assert row["job_dirs"] <= BOUNDS["keep_jobs"] + 1, row
        assert sum(row["feedback"].values()) <= BOUNDS["feedback_max_rows"] + 2 * 160 + 400, row
        assert sum(files for _, files in row["parts"].values()) <= 40, row["parts"]
        assert sum(size for size, _ in row["parts"].values()) <= 4_000_000, row["parts"]
