"""What a run leaves beside the new version: a training-curve PNG and a metrics JSON."""

from __future__ import annotations

import json
from pathlib import Path

CURVE_FILE = "training/curve.png"
METRICS_FILE = "training/metrics.json"


def write_curve(history: list[dict], path: Path, title: str, *, parent: dict[str, float] | None = None,
                gate_metric: str | None = None) -> Path:
    """Save :func:`curve_figure` as a PNG."""
    fig = curve_figure(history, title, parent=parent, gate_metric=gate_metric)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def curve_figure(history: list[dict], title: str, *, parent: dict[str, float] | None = None,
                 gate_metric: str | None = None):
    """Loss per epoch, and held-out accuracy in a second panel below when there is one.

    ``parent`` holds the parent version's held-out metrics, the ones the gate compared the
    candidate with; each is drawn as a dotted horizontal line, the gate's own (``gate_metric``)
    named as such. Each panel's legend sits outside it, so that it hides no point."""
    # A bare Figure, not pyplot: no global figure registry, no display backend to choose.
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    parent = parent or {}
    epochs = [h["epoch"] for h in history]
    with_accuracy = all("val_accuracy" in h for h in history)
    fig = Figure(figsize=(7, 5.6 if with_accuracy else 3.6), dpi=100, layout="constrained")
    axes = fig.subplots(2 if with_accuracy else 1, 1, sharex=True, squeeze=False)[:, 0]
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
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    axes[-1].set_xlabel("epoch")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    return fig


def _baseline(ax, parent: dict[str, float], metric: str, gate_metric: str | None, *, color: str) -> None:
    if metric not in parent:
        return
    label = "parent version, held-out" + ("\n(the gate's baseline)" if metric == gate_metric else "")
    ax.axhline(parent[metric], linestyle=":", linewidth=1.5, color=color, label=label)


def write_metrics(metrics: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return path
