"""The drift metrics: ``tunegate_drift_score{model}`` and ``tunegate_drift_psi{model,feature}``
(only the ``TOP_K`` features that moved most, by index: the labels stay bounded however wide
the input). Read at scrape time from the monitor; a model without a score yet has no sample."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from .drift import TOP_K, DriftMonitor


class DriftCollector(Collector):
    def __init__(self, monitor: DriftMonitor) -> None:
        self._monitor = monitor

    def collect(self) -> Iterator[Metric]:
        score = Metric("tunegate_drift_score", "Input drift: the largest per-feature PSI over the window, "
                       "live inputs against the stable version's reference", "gauge")
        psi = Metric("tunegate_drift_psi", "PSI of the features that moved most (feature: index into the "
                     "reference summary's features)", "gauge")
        for model, state in sorted(self._monitor.models.items()):
            drift = state.drift
            if drift is None or drift.score is None:
                continue
            score.add_sample("tunegate_drift_score", {"model": model}, drift.score)
            for entry in drift.top(TOP_K):
                psi.add_sample("tunegate_drift_psi", {"model": model, "feature": str(entry["feature"])},
                               entry["psi"])
        yield score
        yield psi
