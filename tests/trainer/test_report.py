"""The training-curve PNG: whole-number epochs, the parent's metrics the gate compared with, the pace,
and legends that hide no data (checked on the drawn figure's geometry)."""

from __future__ import annotations

import pytest

from trainer.report import curve_figure, timing, write_curve, write_report

HISTORY = [{"epoch": e, "loss": 1.0 / e, "val_loss": 1.1 / e, "val_accuracy": 0.7 + 0.04 * e} for e in range(1, 6)]


def _drawn(fig):
    fig.draw_without_rendering()
    return fig


def legends_outside_every_axes(fig) -> None:
    """Each legend lies inside the figure and off every axes, so no point is under it."""
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()] + list(fig.legends)
    assert legends
    for legend in legends:
        box = legend.get_window_extent()
        assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1 and fig.bbox.y0 <= box.y0 and box.y1 <= fig.bbox.y1
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent()), legend.get_texts()[0].get_text()


@pytest.mark.parametrize("history", [HISTORY, HISTORY[:2], [dict(h, epoch=i + 1) for i, h in enumerate(HISTORY * 4)]])
def test_epoch_ticks_are_whole_numbers(history):
    fig = _drawn(curve_figure(history, "t"))
    ax = fig.axes[-1]
    low, high = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if low <= t <= high]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_parent_metrics_are_drawn_and_the_gate_metric_named():
    fig = _drawn(curve_figure(HISTORY, "t", parent={"loss": 0.85, "accuracy": 0.74}, gate_metric="loss"))
    loss_ax, acc_ax = fig.axes
    parent_lines = {ax: [line for line in ax.get_lines() if line.get_label().startswith("parent version")]
                    for ax in (loss_ax, acc_ax)}
    (loss_line,), (acc_line,) = parent_lines[loss_ax], parent_lines[acc_ax]
    assert list(loss_line.get_ydata()) == [0.85, 0.85] and "the gate's baseline" in loss_line.get_label()
    assert list(acc_line.get_ydata()) == [0.74, 0.74] and "gate" not in acc_line.get_label()
    assert acc_ax.get_ylim()[0] < 0.74  # the baseline is within view, below every epoch's accuracy


@pytest.mark.parametrize("history", [HISTORY, [{k: v for k, v in h.items() if k != "val_accuracy"} for h in HISTORY]])
def test_legends_hide_no_data(history):
    legends_outside_every_axes(_drawn(curve_figure(history, "t", parent={"loss": 0.5}, gate_metric="loss")))


def test_write_curve_writes_a_png(tmp_path):
    path = write_curve(HISTORY, tmp_path / "training" / "curve.png", "t", parent={"loss": 0.9})
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


PACED = [dict(h, wall_s=2.0 + e, samples_per_s=400.0 + 10 * e, samples_per_s_slowest_rank=200.0 + 5 * e)
         for e, h in enumerate(HISTORY)]
PACED[0]["time_to_first_step_s"] = 7.5


def test_pace_panel_shows_samples_per_s_wall_times_and_time_to_first_step():
    fig = _drawn(curve_figure(PACED, "t", parent={"loss": 0.5}, gate_metric="loss"))
    pace = fig.axes[-1]
    assert len(fig.axes) == 3 and pace.get_ylabel() == "samples/s"
    job, slowest = pace.get_lines()
    assert list(job.get_ydata()) == [h["samples_per_s"] for h in PACED]
    assert list(slowest.get_ydata()) == [h["samples_per_s_slowest_rank"] for h in PACED]
    assert [t.get_text() for t in pace.texts] == [f"{h['wall_s']:.1f} s" for h in PACED]
    assert "first step after 7.5 s" in pace.get_title()
    legends_outside_every_axes(fig)


def test_timing_summarises_the_pace_and_skips_epochs_without_it():
    summary = timing([HISTORY[0], *PACED[1:]])  # a resumed run: its first epoch predates the pace
    assert summary["wall_s"] == pytest.approx(sum(h["wall_s"] for h in PACED[1:]))
    assert summary["samples_per_s"] == pytest.approx(425.0) and summary["time_to_first_step_s"] is None
    assert timing(PACED)["time_to_first_step_s"] == 7.5


def test_write_report_writes_metrics_and_curve(tmp_path):
    import json

    files = write_report({"history": PACED, "before": {"loss": 0.9}}, tmp_path / "r", "t")
    assert json.loads(files["metrics"].read_text())["history"] == PACED
    assert files["curve"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
