"""When a canary is decided, and which way: hard guards, then a sequential test.

In order, on every process's evidence summed (``gateway.loop.evidence``):

1. **Guards** (hard stops, checked once the canary has ``canary_min_requests``): an error
   rate above the stable version's by more than ``max_error_rate_increase``, or (over at
   least ``canary_latency_samples`` answers a side) a p99 latency above both
   ``max_p99_ratio`` times the stable's and the stable's plus ``p99_slack_ms``: rolled back
   at once.
2. **Accuracy**, when labelled feedback scores both sides' answers: the sequential test of
   ``gateway.loop.sequential`` decides as soon as the labels suffice, with error rates
   ``canary_alpha`` (rolling back a canary as good) and ``canary_beta`` (promoting one worse
   by ``canary_mde``).
3. **No labels**: with ``canary_wait_for_labels`` off, after ``canary_window_requests``
   canary answers that passed the guards the canary is promoted (the guards are all there
   is to judge on) — unless its shadow evaluation found too little evidence
   (``evidence_needed``): requests alone never promote such a canary.
4. **Time cap**: ``canary_window_seconds`` after publication (and ``canary_min_requests``
   answers), an undecided test is truncated: promoted if the evidence leans towards "as
   accurate" (log-likelihood ratio below 0), else rolled back. With ``evidence_needed`` and
   no labelled evidence at all, it is rolled back: nothing says it is as good, and a person
   can still promote it by hand (``tunegate models promote``) before the cap.
"""

from __future__ import annotations

from model_repo.canary_state import PROMOTED, ROLLED_BACK

from .evidence import Side
from .sequential import PROMOTE, ROLL_BACK, TestState, evaluate
from .settings import LoopSettings


def accuracy_test(c: Side, s: Side, fraction: float, settings: LoopSettings) -> TestState:
    return evaluate(c.correct, c.labelled, s.correct, s.labelled, alpha=settings.canary_alpha,
                    beta=settings.canary_beta, mde=settings.canary_mde, min_labelled=settings.min_labelled,
                    fraction=fraction)


def guard_failure(c: Side, s: Side, settings: LoopSettings) -> str | None:
    """Why the canary must be rolled back whatever its accuracy, if it must."""
    if c.error_rate - s.error_rate > settings.max_error_rate_increase:
        return (f"error rate {c.error_rate:.2%} on {c.requests} requests vs {s.error_rate:.2%} "
                f"on the stable version (allowed +{settings.max_error_rate_increase:.2%})")
    # A p99 over a few answers is their slowest one (a cold cache, a busy neighbour): judge
    # latency only on enough answers each side.
    enough = min(c.latency_count, s.latency_count) >= settings.canary_latency_samples
    if enough and c.p99_ms is not None and s.p99_ms is not None:
        limit = max(s.p99_ms * settings.max_p99_ratio, s.p99_ms + settings.p99_slack_ms)
        if c.p99_ms > limit:
            return f"p99 latency {c.p99_ms:.1f} ms vs {s.p99_ms:.1f} ms on the stable version"
    return None


def verdict(c: Side, s: Side, *, fraction: float, elapsed: float, settings: LoopSettings,
            test: TestState | None = None, evidence_needed: bool = False) -> tuple[str | None, str]:
    """(PROMOTED, ROLLED_BACK or None to keep watching, why) for a canary ``elapsed``
    seconds after its publication, on the summed evidence ``c`` (canary) and ``s`` (stable);
    ``evidence_needed``: its shadow phase was ``insufficient`` (rules 3 and 4)."""
    enough = c.requests >= settings.canary_min_requests
    if enough and (why := guard_failure(c, s, settings)):
        return ROLLED_BACK, why
    test = test or accuracy_test(c, s, fraction, settings)
    guards = f"error rate {c.error_rate:.2%} vs {s.error_rate:.2%}"
    if test.decision == ROLL_BACK:
        return ROLLED_BACK, test.reason
    if test.decision == PROMOTE and enough:
        return PROMOTED, f"{guards}; {test.reason}"
    if (test.estimate is None and not settings.canary_wait_for_labels and not evidence_needed
            and c.requests >= settings.canary_window_requests):
        return PROMOTED, f"{guards}; accuracy not compared ({test.reason})"
    window = settings.canary_window_seconds
    if window is not None and elapsed >= window and enough:
        if evidence_needed and test.llr is None:
            return ROLLED_BACK, (f"time window closed with no evidence it is as good: shadow evaluation was "
                                 f"insufficient and {test.reason}")
        if test.llr is None or test.llr < 0:
            return PROMOTED, f"time window closed; {guards}; {test.reason}"
        return ROLLED_BACK, f"time window closed, leaning less accurate: {test.reason}"
    return None, test.reason
