"""The canary verdict from a window's evidence: each rule on its own, no clock involved."""

from __future__ import annotations

from gateway.loop.canary import CanaryState, Side, decide
from gateway.loop.settings import LoopSettings


def _side(requests: int = 100, errors: int = 0, latency_ms: float = 5.0, labelled: int = 0, correct: int = 0) -> Side:
    side = Side(requests=requests, errors=errors, labelled=labelled, correct=correct)
    for _ in range(requests):
        side.add_latency(latency_ms)
    return side


def _verdict(canary: Side, stable: Side, **settings) -> tuple[bool, str]:
    state = CanaryState(model="m", version=2, stable=1, fraction=0.1)
    state.canary_side, state.stable_side = canary, stable
    return decide(state, LoopSettings(**settings))


def test_an_equal_canary_is_promoted_and_says_why() -> None:
    promote, why = _verdict(_side(labelled=40, correct=38), _side(labelled=40, correct=38), min_labelled=20)
    assert promote and "accuracy 95.00% vs 95.00%" in why


def test_more_errors_roll_back() -> None:
    promote, why = _verdict(_side(errors=5), _side(errors=0), max_error_rate_increase=0.01)
    assert not promote and why.startswith("error rate 5.00% on 100 requests")
    assert _verdict(_side(errors=1), _side(errors=0), max_error_rate_increase=0.01)[0]


def test_p99_must_pass_both_the_ratio_and_the_slack() -> None:
    # 3x slower and 90 ms more: both limits exceeded
    promote, why = _verdict(_side(latency_ms=135.0), _side(latency_ms=45.0), max_p99_ratio=2.0, p99_slack_ms=50.0)
    assert not promote and "p99 latency 135.0 ms vs 45.0 ms" in why
    # 4x slower but only 15 ms more: within the absolute slack, small latencies are noise
    assert _verdict(_side(latency_ms=20.0), _side(latency_ms=5.0), max_p99_ratio=2.0, p99_slack_ms=50.0)[0]
    # too few stable samples to judge latency at all
    assert _verdict(_side(latency_ms=500.0), _side(requests=5, latency_ms=5.0), p99_slack_ms=0.0)[0]


def test_accuracy_is_compared_only_with_enough_labels() -> None:
    worse, better = _side(labelled=40, correct=20), _side(labelled=40, correct=38)
    promote, why = _verdict(worse, better, min_labelled=20, max_accuracy_drop=0.02)
    assert not promote and why.startswith("accuracy 50.00% on 40 labelled answers")
    promote, why = _verdict(_side(labelled=4, correct=0), better, min_labelled=20)
    assert promote and "accuracy not compared (4/40 labelled answers, 20 needed each)" in why
