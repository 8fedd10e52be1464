"""The promotion gate: is the candidate at least as good as the serving version?

``METRIC:MIN_DELTA`` asks that the candidate improve ``METRIC`` by at least ``MIN_DELTA``
over the serving version on the same held-out data: ``loss:+0.0`` (the default) means the
loss must not be worse, ``accuracy:+0.01`` one more point of accuracy, ``accuracy:-0.005``
tolerates a small drop. Improvement is measured in the metric's good direction.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import DataError

LOWER_IS_BETTER = {"loss": True, "accuracy": False}
DEFAULT_GATE = "loss:+0.0"


@dataclass(frozen=True)
class Gate:
    metric: str
    min_delta: float

    @classmethod
    def parse(cls, spec: str) -> Gate:
        metric, sep, delta = spec.partition(":")
        if metric not in LOWER_IS_BETTER:
            raise DataError(f"--gate {spec!r}: metric must be one of {sorted(LOWER_IS_BETTER)}")
        try:
            return cls(metric, float(delta) if sep else 0.0)
        except ValueError:
            raise DataError(f"--gate {spec!r}: MIN_DELTA must be a number like +0.0 or -0.01") from None

    def improvement(self, before: dict[str, float], after: dict[str, float]) -> float:
        if self.metric not in before or self.metric not in after:
            raise DataError(f"--gate {self.metric}: the model does not report {self.metric} "
                            "(accuracy needs a classifier)")
        delta = after[self.metric] - before[self.metric]
        return -delta if LOWER_IS_BETTER[self.metric] else delta

    def decide(self, before: dict[str, float], after: dict[str, float]) -> dict:
        improvement = self.improvement(before, after)
        passed = improvement >= self.min_delta
        verdict = "passed" if passed else "failed"
        return {
            "metric": self.metric, "min_delta": self.min_delta, "before": before[self.metric],
            "after": after[self.metric], "improvement": improvement, "passed": passed,
            "message": (f"gate {verdict}: {self.metric} {before[self.metric]:.6g} -> {after[self.metric]:.6g} "
                        f"(improvement {improvement:+.6g}, required {self.min_delta:+.6g})"),
        }
