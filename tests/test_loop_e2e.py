"""End to end: feedback over HTTP -> fine-tune job (horovodrun, np=2) -> canary -> promotion,
with a client sending throughout (packaging/loop_demo.py is the same run, with a plot)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "packaging"))

import loop_demo  # noqa: E402


def test_feedback_to_promotion_on_rotated_digits(tmp_path):
    summary = loop_demo.run_loop(tmp_path, log=lambda line: print(line, flush=True))
    before, after = summary["before"], summary["after"]
    assert summary["job"]["state"] == "succeeded", summary["job"]
    assert summary["job"]["result"]["summary"]["world_size"] == 2
    assert summary["canary"]["state"] == "promoted", summary["canary"]
    assert summary["canary"]["canary"]["labelled"] >= 20  # accuracy was compared on its own answers
    assert summary["served_after"] == [str(summary["job"]["result"]["version"])]
    assert after["rotated"] - before["rotated"] >= 0.20, (before, after)
    assert before["upright"] - after["upright"] <= 0.01, (before, after)
    assert summary["failures"] == 0, summary["errors"]
    assert len(summary["answered_by"]) == 2  # the client saw both versions: the loop ran under load
    assert 'tunegate_canary_decisions{model="digits",outcome="promoted"} 1.0' in summary["metrics"]
    assert 'tunegate_finetune_jobs{model="digits",state="succeeded"} 1.0' in summary["metrics"]
    loop_demo.plot(summary, tmp_path / "accuracy.png")
    assert (tmp_path / "accuracy.png").stat().st_size > 0
