"""The canary's sequential accuracy test on synthetic labels with known answers: its false
alarm rate is near alpha, it catches a drop of the minimum effect, and it says how many
more labels it needs."""

from __future__ import annotations

from gateway.loop.sequential import PROMOTE, evaluate, simulate

TEST = dict(alpha=0.05, beta=0.1, mde=0.05, min_labelled=20)


def test_an_as_accurate_canary_is_rarely_rolled_back():
    for p, fraction in ((0.9, 0.1), (0.7, 0.2)):
        rates = simulate(p, p, runs=2000, max_labels=3000, fraction=fraction, seed=1, **TEST)
        assert rates["rolled_back"] <= TEST["alpha"] + 0.02, rates  # type I error near alpha
        assert rates["undecided"] <= 0.01, rates


def test_a_drop_of_the_minimum_effect_is_caught():
    rates = simulate(0.85, 0.9, runs=2000, max_labels=3000, fraction=0.1, seed=2, **TEST)
    assert rates["rolled_back"] >= 0.8, rates
    rates = simulate(0.65, 0.7, runs=2000, max_labels=3000, fraction=0.2, seed=3, **TEST)
    assert rates["rolled_back"] >= 1 - TEST["beta"] - 0.03, rates
    # a much worse canary is caught with few labels
    assert simulate(0.5, 0.9, runs=500, max_labels=3000, fraction=0.1, seed=4, **TEST)["mean_labels"] < 40


def test_it_reports_its_estimate_interval_and_the_labels_it_still_needs():
    state = evaluate(45, 50, 460, 500, fraction=0.1, **TEST)
    assert state.decision is None and abs(state.estimate - (0.9 - 0.92)) < 1e-9
    low, high = state.interval
    assert low < state.estimate < high and state.labels_needed > 0
    # at the same rates, about that many more labels reach a bound, and fewer do not

    def after(m: int):
        return evaluate(round(0.9 * (50 + m)), 50 + m, round(0.92 * (500 + 10 * m)), 500 + 10 * m, fraction=0.1, **TEST)

    assert after(round(1.1 * state.labels_needed)).decision is not None
    assert after(round(0.8 * state.labels_needed)).decision is None
    assert evaluate(10, 10, 100, 100, fraction=0.1, **TEST).labels_needed is None  # too few labels yet
    assert evaluate(2900, 3000, 28000, 30000, fraction=0.1, **TEST).decision == PROMOTE
