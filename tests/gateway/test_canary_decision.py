"""The canary verdict from the summed evidence: guards, the sequential accuracy test, the
request window without labels and the time cap; each rule on its own, no clock involved."""

from __future__ import annotations

from gateway.loop.canary_verdict import verdict
from gateway.loop.evidence import Side
from gateway.loop.settings import LoopSettings


def _side(requests: int = 100, errors: int = 0, latency_ms: float = 5.0, labelled: int = 0, correct: int = 0) -> Side:
    side = Side(requests=requests, errors=errors, labelled=labelled, correct=correct)
    for _ in range(requests - errors):
        side.add_latency(latency_ms)
    return side


def _verdict(canary: Side, stable: Side, elapsed: float = 0.0, **settings) -> tuple[str | None, str]:
    return verdict(canary, stable, fraction=0.1, elapsed=elapsed, settings=LoopSettings(**settings))


def test_an_as_accurate_canary_is_promoted_once_the_labels_suffice_and_says_why() -> None:
    outcome, why = _verdict(_side(labelled=40, correct=38), _side(labelled=400, correct=380))
    assert outcome is None and why.startswith("undecided: accuracy 95.00% on 40 labelled answers")
    outcome, why = _verdict(_side(labelled=300, correct=285), _side(labelled=3000, correct=2850))
    assert outcome == "promoted" and "as accurate: accuracy 95.00% on 300" in why


def test_a_less_accurate_canary_is_rolled_back_by_the_test() -> None:
    outcome, why = _verdict(_side(labelled=200, correct=160), _side(labelled=2000, correct=1900))
    assert outcome == "rolled_back" and why.startswith("less accurate: accuracy 80.00% on 200")


def test_more_errors_roll_back() -> None:
    outcome, why = _verdict(_side(errors=5), _side(errors=0), max_error_rate_increase=0.01)
    assert outcome == "rolled_back" and why.startswith("error rate 5.00% on 100 requests")
    assert _verdict(_side(errors=1), _side(errors=0), max_error_rate_increase=0.01,
                    canary_window_requests=100)[0] == "promoted"


def test_p99_must_pass_both_the_ratio_and_the_slack() -> None:
    # 3x slower and 90 ms more: both limits exceeded
    outcome, why = _verdict(_side(latency_ms=135.0), _side(latency_ms=45.0), max_p99_ratio=2.0, p99_slack_ms=50.0)
    assert outcome == "rolled_back" and "p99 latency 135.0 ms vs 45.0 ms" in why
    # 4x slower but only 15 ms more: within the absolute slack, small latencies are noise
    assert _verdict(_side(latency_ms=20.0), _side(latency_ms=5.0), max_p99_ratio=2.0, p99_slack_ms=50.0,
                    canary_window_requests=100)[0] == "promoted"
    # too few stable samples to judge latency at all
    assert _verdict(_side(latency_ms=500.0), _side(requests=5, latency_ms=5.0), p99_slack_ms=0.0,
                    canary_window_requests=100)[0] == "promoted"


def test_without_labels_the_request_window_decides_unless_told_to_wait() -> None:
    outcome, why = _verdict(_side(requests=100), _side(), canary_window_requests=100)
    assert outcome == "promoted" and "accuracy not compared (waiting for labelled answers" in why
    assert _verdict(_side(requests=99), _side(), canary_window_requests=100)[0] is None
    assert _verdict(_side(requests=100), _side(), canary_window_requests=100, canary_wait_for_labels=True)[0] is None


def test_the_time_cap_truncates_an_undecided_test_towards_the_evidence() -> None:
    leaning_good = (_side(labelled=40, correct=39), _side(labelled=400, correct=380))
    leaning_bad = (_side(labelled=40, correct=34), _side(labelled=400, correct=380))
    settings = {"canary_window_seconds": 60.0, "canary_wait_for_labels": True}
    assert _verdict(*leaning_good, elapsed=30, **settings)[0] is None
    assert _verdict(*leaning_good, elapsed=61, **settings)[0] == "promoted"
    outcome, why = _verdict(*leaning_bad, elapsed=61, **settings)
    assert outcome == "rolled_back" and why.startswith("time window closed, leaning less accurate")
