"""The loop demo's accuracy-per-version PNG: its legend covers no bar."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "packaging"))
import loop_demo  # noqa: E402

from tests.trainer.test_report import legends_outside_every_axes  # noqa: E402


def test_legend_covers_no_bar(tmp_path):
    summary = {"versions": {"1": {"upright": 0.97, "rotated": 0.08}, "2": {"upright": 0.95, "rotated": 0.93}}}
    fig = loop_demo.accuracy_figure(summary)
    fig.draw_without_rendering()
    (ax,) = fig.axes
    legend = ax.get_legend().get_window_extent()
    assert not any(legend.overlaps(bar.get_window_extent()) for bar in ax.patches)
    legends_outside_every_axes(fig)
    assert loop_demo.plot(summary, tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
