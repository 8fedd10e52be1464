"""What a run leaves beside the new version: a training-curve PNG and a metrics JSON."""

from __future__ import annotations

import json
from pathlib import Path

CURVE_FILE = "training/curve.png"
METRICS_FILE = "training/metrics.json"


def write_curve(history: list[dict], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display on training hosts
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, loss_ax = plt.subplots(figsize=(6, 4), dpi=100)
    try:
        loss_ax.plot(epochs, [h["loss"] for h in history], "o-", label="train loss (mean over ranks)")
        if all("val_loss" in h for h in history):
            loss_ax.plot(epochs, [h["val_loss"] for h in history], "s-", label="held-out loss")
        loss_ax.set_xlabel("epoch")
        loss_ax.set_ylabel("loss")
        if all("val_accuracy" in h for h in history):
            acc_ax = loss_ax.twinx()
            acc_ax.plot(epochs, [h["val_accuracy"] for h in history], "^--", color="tab:green",
                        label="held-out accuracy")
            acc_ax.set_ylabel("accuracy")
            acc_ax.legend(loc="center right")
        loss_ax.legend(loc="upper right")
        loss_ax.set_title(title)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def write_metrics(metrics: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return path
