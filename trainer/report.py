"""What a run leaves: a training-curve PNG and a metrics JSON, in the report directory for
every job that trained and beside the new version when one is published."""

from __future__ import annotations

import json
from pathlib import Path

CURVE_FILE = "training/curve.png"
METRICS_FILE = "training/metrics.json"


def timing(history: list[dict]) -> dict:
    """The run's pace: time to its first step, wall time over its epochs, and the median
    epoch's samples/s (the job's, and its slowest rank's). Epochs from before a resume that
    did not record them are left out."""
    import statistics

    timed = [h for h in history if "wall_s" in h]
    first = [h["time_to_first_step_s"] for h in timed if "time_to_first_step_s" in h]
    out: dict = {"time_to_first_step_s": first[-1] if first else None,
                 "wall_s": sum(h["wall_s"] for h in timed)}
    for key in ("samples_per_s", "samples_per_s_slowest_rank"):
        out[key] = statistics.median(h[key] for h in timed) if timed else None
    return out


def write_report(summary: dict, directory: Path, title: str) -> dict[str, Path]:
    """``metrics.json`` (the whole summary) and ``curve.png`` under ``directory``."""
    gate = summary.get("gate") or {}
    curve = write_curve(summary["history"], directory / Path(CURVE_FILE).name, title,
                        parent=summary.get("before"), gate_metric=gate.get("metric"))
    return {"metrics": write_metrics(summary, directory / Path(METRICS_FILE).name), "curve": curve}


def write_curve(history: list[dict], path: Path, title: str, *, parent: dict[str, float] | None = None,
                gate_metric: str | None = None) -> Path:
    """Save :func:`curve_figure` as a PNG."""
    fig = curve_figure(history, title, parent=parent, gate_metric=gate_metric)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def curve_figure(history: list[dict], title: str, *, parent: dict[str, float] | None = None,
                 gate_metric: str | None = None):
    """Loss per epoch, held-out accuracy in a panel below when there is one, and the pace
    (samples/s per epoch, each point labelled with its wall time; the time to the first step
    in the panel's title) in the last panel when the history has it.

    ``parent`` holds the parent version's held-out metrics, the ones the gate compared the
    candidate with; each is drawn as a dotted horizontal line, the gate's own (``gate_metric``)
    named as such. Each panel's legend sits outside it, so that it hides no point."""
    # A bare Figure, not pyplot: no global figure registry, no display backend to choose.
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    parent = parent or {}
    epochs = [h["epoch"] for h in history]
    with_accuracy = all("val_accuracy" in h for h in history)
    with_pace = bool(history) and all("samples_per_s" in h for h in history)
    panels = 1 + with_accuracy + with_pace
    fig = Figure(figsize=(7, 1.2 + 2.4 * panels), dpi=100, layout="constrained")
    axes = fig.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
    loss_ax = axes[0]
    loss_ax.plot(epochs, [h["loss"] for h in history], "o-", color="tab:blue", label="train (mean over ranks)")
    if all("val_loss" in h for h in history):
        loss_ax.plot(epochs, [h["val_loss"] for h in history], "s-", color="tab:orange", label="held-out")
    _baseline(loss_ax, parent, "loss", gate_metric, color="tab:orange")
    loss_ax.set_ylabel("loss")
    loss_ax.set_title(title)
    if with_accuracy:
        axes[1].plot(epochs, [h["val_accuracy"] for h in history], "^-", color="tab:green", label="held-out")
        _baseline(axes[1], parent, "accuracy", gate_metric, color="tab:green")
        axes[1].set_ylabel("accuracy")
    if with_pace:
        _pace(axes[-1], history)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    axes[-1].set_xlabel("epoch")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    return fig


def _pace(ax, history: list[dict]) -> None:
    epochs = [h["epoch"] for h in history]
    rates = [h["samples_per_s"] for h in history]
    ax.plot(epochs, rates, "D-", color="tab:purple", label="job (slowest rank × ranks)")
    if all("samples_per_s_slowest_rank" in h for h in history):
        ax.plot(epochs, [h["samples_per_s_slowest_rank"] for h in history], "v--", color="tab:gray",
                label="slowest rank")
    for epoch, rate, h in zip(epochs, rates, history):
        ax.annotate(f"{h['wall_s']:.1f} s", (epoch, rate), textcoords="offset points", xytext=(0, 6),
                    ha="center", fontsize="x-small")
    ax.set_ylim(0, max(rates) * 1.25 or 1)  # room above the points for their wall-time labels
    ax.set_ylabel("samples/s")
    first = [h["time_to_first_step_s"] for h in history if "time_to_first_step_s" in h]
    ax.set_title(f"pace (epoch wall time above each point; first step after {first[-1]:.1f} s)"
                 if first else "pace (epoch wall time above each point)", fontsize="small")


def _baseline(ax, parent: dict[str, float], metric: str, gate_metric: str | None, *, color: str) -> None:
    if metric not in parent:
        return
    label = "parent version, held-out" + ("\n(the gate's baseline)" if metric == gate_metric else "")
    ax.axhline(parent[metric], linestyle=":", linewidth=1.5, color=color, label=label)


def write_metrics(metrics: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return path
