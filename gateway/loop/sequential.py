"""The canary's accuracy test: a sequential probability ratio test on labelled outcomes.

Each labelled answer is a success or a failure; the canary's and the stable version's
accuracies are compared as labels arrive, and the test stops as soon as the evidence is
enough either way, with stated error rates instead of a fixed window and threshold:

- H0: the canary is as accurate as the stable version (difference 0);
- H1: it is worse by the minimum detectable effect ``mde`` (difference ``-mde``);
- ``alpha``: the chance of rolling back a canary that is as good (a false alarm);
- ``beta``: the chance of promoting a canary that is worse by ``mde`` (a miss).

The statistic is Wald's SPRT on the difference of the two accuracies in information time:
with ``d`` the observed difference and ``se`` its standard error (the Bernoulli
variance of the pooled, Laplace-smoothed rate, so that a perfect record has some), the information is
``I = 1/se^2`` and the log-likelihood ratio of H1 to H0 at ``d`` is
``I * (-mde*d - mde^2/2)``. The test rolls back when it reaches ``log((1-beta)/alpha)`` and
promotes when it reaches ``log(beta/(1-alpha))`` (Wald's bounds, which hold their error
rates conservatively when looked at after every label). The normal approximation needs some
labels on each side: nothing is decided before ``min_labelled`` each. Stable labels count
fully, so a 10 % canary is judged against a well-measured stable version.

All functions take plain numbers or numpy arrays (the simulation in the tests runs
thousands of canaries at once).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

ROLL_BACK, PROMOTE = "worse", "not_worse"


def _variance(correct, n):
    p = (correct + 1.0) / (n + 2.0)  # Laplace: a side that was always right still varies
    return p * (1.0 - p)


def information(canary_correct, canary_n, stable_correct, stable_n):
    """1 / (standard error of the accuracy difference)^2, from the pooled accuracy: a
    variance from each side's own rate would grow when the canary does badly by chance and
    shrink when it does well, tilting the test towards promotion."""
    v = _variance(canary_correct + stable_correct, canary_n + stable_n)
    return 1.0 / (v / canary_n + v / stable_n)


def log_likelihood_ratio(canary_correct, canary_n, stable_correct, stable_n, mde: float):
    """log L(H1) - log L(H0) at the observed difference (positive: evidence the canary is worse)."""
    d = canary_correct / canary_n - stable_correct / stable_n
    return information(canary_correct, canary_n, stable_correct, stable_n) * (-mde * d - mde * mde / 2.0)


def bounds(alpha: float, beta: float) -> tuple[float, float]:
    """(promote below, roll back above)."""
    return math.log(beta / (1.0 - alpha)), math.log((1.0 - beta) / alpha)


@dataclass(frozen=True)
class TestState:
    decision: str | None  # ROLL_BACK, PROMOTE, or None: keep going
    estimate: float | None  # canary accuracy minus stable accuracy
    interval: tuple[float, float] | None  # its 95 % (fixed-sample) interval
    llr: float | None
    labels_needed: int | None  # more canary labels to reach a bound if the estimate holds
    reason: str

    def to_dict(self) -> dict[str, Any]:
        r = lambda x: None if x is None else round(float(x), 6)  # noqa: E731
        return {"decision": self.decision, "estimate": r(self.estimate),
                "interval": None if self.interval is None else [r(self.interval[0]), r(self.interval[1])],
                "llr": r(self.llr), "labels_needed": self.labels_needed, "reason": self.reason}


def evaluate(canary_correct: int, canary_n: int, stable_correct: int, stable_n: int, *, alpha: float,
             beta: float, mde: float, min_labelled: int, fraction: float) -> TestState:
    """Where the test stands after these labels (``fraction``: the canary's share of traffic,
    to say how many more labels it takes)."""
    low, high = bounds(alpha, beta)
    if min(canary_n, stable_n) < min_labelled:
        return TestState(None, None, None, None, None, f"waiting for labelled answers ({canary_n} on the canary, "
                         f"{stable_n} on the stable version, {min_labelled} needed each)")
    d = canary_correct / canary_n - stable_correct / stable_n
    info = information(canary_correct, canary_n, stable_correct, stable_n)
    half = 1.96 / math.sqrt(info)
    llr = info * (-mde * d - mde * mde / 2.0)
    said = (f"accuracy {canary_correct / canary_n:.2%} on {canary_n} labelled answers vs "
            f"{stable_correct / stable_n:.2%} on {stable_n}; difference {d:+.2%} ± {half:.2%}; "
            f"log-likelihood ratio {llr:.2f} (bounds {low:.2f}, {high:.2f}; alpha {alpha:g}, beta {beta:g}, "
            f"minimum effect {mde:.2%})")
    if llr >= high:
        return TestState(ROLL_BACK, d, (d - half, d + half), llr, 0, "less accurate: " + said)
    if llr <= low:
        return TestState(PROMOTE, d, (d - half, d + half), llr, 0, "as accurate: " + said)
    needed = _labels_needed(canary_correct, canary_n, stable_correct, stable_n, mde, low, high, fraction)
    return TestState(None, d, (d - half, d + half), llr, needed, "undecided: " + said)


def _labels_needed(cc: int, cn: int, sc: int, sn: int, mde: float, low: float, high: float,
                   fraction: float) -> int | None:
    """More canary labels (with stable labels in the traffic's proportion) until the ratio
    reaches a bound, if the observed accuracies hold; None when they point nowhere."""
    d = cc / cn - sc / sn
    slope = -mde * d - mde * mde / 2.0  # the ratio per unit of information
    if slope == 0:
        return None
    target_info = (high if slope > 0 else low) / slope
    ratio = sn / cn if cn else (1 - fraction) / fraction
    v = _variance(cc + sc, cn + sn)

    def info_after(m: int) -> float:
        return 1.0 / (v / (cn + m) + v / (sn + m * ratio))

    if info_after(0) >= target_info:
        return 0
    hi = 1
    while info_after(hi) < target_info:
        hi *= 2
        if hi > 1 << 40:
            return None
    lo = hi // 2
    while lo + 1 < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if info_after(mid) < target_info else (lo, mid)
    return hi


def simulate(p_canary: float, p_stable: float, *, runs: int, max_labels: int, fraction: float, alpha: float,
             beta: float, mde: float, min_labelled: int, seed: int = 0) -> dict[str, float]:
    """Share of ``runs`` simulated canaries rolled back, promoted, or undecided after
    ``max_labels`` canary labels, the test looked at after every label (for the tests and
    the closing note's measured error rates)."""
    rng = np.random.default_rng(seed)
    per = max(1, round((1 - fraction) / fraction))  # stable labels per canary label
    c = np.cumsum(rng.random((runs, max_labels)) < p_canary, axis=1)
    s = np.cumsum((rng.random((runs, max_labels * per)) < p_stable).reshape(runs, max_labels, per).sum(2), axis=1)
    n = np.arange(1, max_labels + 1)
    llr = log_likelihood_ratio(c, n, s, n * per, mde)
    llr[:, : max(0, math.ceil(min_labelled) - 1)] = 0.0  # nothing decided before min_labelled
    low, high = bounds(alpha, beta)
    hit_high = np.where((llr >= high).any(1), (llr >= high).argmax(1), max_labels)
    hit_low = np.where((llr <= low).any(1), (llr <= low).argmax(1), max_labels)
    rolled = (hit_high < hit_low).mean()
    promoted = (hit_low < hit_high).mean()
    return {"rolled_back": float(rolled), "promoted": float(promoted), "undecided": max(0.0, float(1 - rolled - promoted)),
            "mean_labels": float(np.minimum(hit_high, hit_low).mean() + 1)}
