"""End to end, over HTTP, nothing counted by hand (packaging/drift_demo.py): a client's
inputs drift and the drift trigger starts a fine-tune (real horovodrun); the candidate
passes shadow evaluation and the golden set; the sequential canary promotes it on the
client's labels; a candidate trained on random labels is stopped in shadow evaluation and
never serves; the client saw no failed request."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "packaging"))

import drift_demo  # noqa: E402


def test_drift_to_promotion_and_a_bad_candidate_stopped(tmp_path):
    summary = drift_demo.run(tmp_path, log=lambda line: print(line, flush=True))
    before, after, good, bad = summary["before"], summary["after"], summary["good"], summary["bad"]
    assert good["state"] == "promoted", good
    assert "as accurate" in good["reason"], good  # decided by the sequential test on labels
    assert good["test"]["decision"] == "not_worse" and good["processes"] >= 1
    assert after["rotated"] - before["rotated"] >= 0.20, (before, after)
    assert before["upright"] - after["upright"] <= 0.01, (before, after)
    assert bad["state"] == "rolled_back" and bad["reason"].startswith("shadow evaluation: "), bad
    assert "golden set" in bad["reason"]
    assert summary["served_after"] == [str(good["version"])]  # the bad one never became stable
    assert summary["failures"] == 0, summary["errors"]
    png = tmp_path / "drift_demo.png"
    drift_demo.figure(summary).savefig(png)
    assert png.read_bytes()[:4] == b"\x89PNG"
