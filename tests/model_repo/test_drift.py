"""Input summaries and drift statistics on synthetic data with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from model_repo.drift import (MIN_ROWS, InputSummary, InputSummaryError, Projection, compare, ks, psi,
                              summarise)


def _roundtrip(summary: InputSummary) -> InputSummary:
    return InputSummary.from_dict(json.loads(json.dumps(summary.to_dict())))


def test_identical_distributions_score_near_zero_and_a_shift_is_detected():
    rng = np.random.default_rng(0)
    reference = _roundtrip(summarise(rng.normal(size=(4000, 6)).astype(np.float32)))
    same = compare(reference, reference.bin(rng.normal(size=(4000, 6))))
    assert same.rows == 4000 and same.score < 0.02 and same.ks.max() < 0.05
    shifted = rng.normal(size=(4000, 6))
    shifted[:, 4] += 1.0  # one feature moves by one standard deviation
    drift = compare(reference, reference.bin(shifted))
    assert drift.score > 0.5 and drift.top(1)[0]["feature"] == 4
    # KS of N(0,1) vs N(1,1) is 2*Phi(0.5)-1 = 0.383; the binned KS reads it at bin edges.
    assert 0.3 < drift.ks[4] <= 0.4 and np.all(np.delete(drift.psi, 4) < 0.02)


def test_psi_and_ks_known_values():
    # Two bins, 50/50 against 90/10 (no smoothing to speak of at these counts).
    expected, actual = np.array([[500_000, 500_000]]), np.array([[900_000, 100_000]])
    assert psi(expected, actual)[0] == pytest.approx(0.4 * np.log(1.8) - 0.4 * np.log(0.2), rel=1e-4)
    assert ks(expected, actual)[0] == pytest.approx(0.4)
    assert psi(expected, expected)[0] == 0.0 and ks(expected, expected)[0] == 0.0


def test_values_outside_the_reference_fall_in_under_and_overflow():
    summary = summarise(np.linspace(0.0, 1.0, 1000)[:, None])
    counts = summary.bin(np.array([-5.0, 0.0, 0.5, 1.0, 7.0, np.nan]))
    in_range = counts[0, 1:len(summary.edges[0])].sum()
    assert counts[0, 0] == 1 and in_range == 3 and counts[0, len(summary.edges[0])] == 2
    assert summary.counts[0, 0] == 0 and summary.counts.sum() == 1000


def test_a_constant_feature_and_too_few_live_rows():
    summary = summarise(np.zeros((500, 3)))
    assert [len(e) for e in summary.edges] == [1, 1, 1]
    drift = compare(summary, summary.bin(np.ones((MIN_ROWS - 1, 3))))
    assert drift.score is None and drift.psi.min() > 1.0  # all overflow: drifted, but too few rows to say
    assert compare(summary, summary.bin(np.ones((MIN_ROWS, 3)))).score > 1.0


def test_wide_inputs_are_projected_the_same_way_every_time():
    rng = np.random.default_rng(1)
    images = rng.random((600, 8, 8, 3)).astype(np.float32)
    summary = summarise(images, input="image", seed=7)
    assert summary.features == 32 and summary.width == 192 and summary.projection.seed == 7
    again = _roundtrip(summary)
    np.testing.assert_array_equal(again.values(images[:10]), summary.values(images[:10]))
    assert Projection(192, 32, 7).digest == summary.projection.digest != Projection(192, 32, 8).digest
    # Every coordinate lands in exactly one dimension: the sums of |x| add up.
    ones = np.ones((1, 192))
    assert np.abs(Projection(192, 32, 7).apply(ones)).sum() <= 192
    assert compare(again, again.bin(rng.random((600, 8, 8, 3)))).score < 0.2
    assert compare(again, again.bin(rng.random((600, 8, 8, 3)) ** 3)).score > 0.5


def test_unusable_data_and_summaries_are_refused():
    with pytest.raises(InputSummaryError, match="no rows"):
        summarise(np.zeros((0, 4)))
    with pytest.raises(InputSummaryError, match="numbers only"):
        summarise(np.array([["a"]]))
    data = summarise(np.random.default_rng(0).random((100, 2))).to_dict()
    data["projection"] = {"kind": "count_sketch", "width": 64, "dims": 32, "seed": 0, "digest": "0" * 16}
    with pytest.raises(InputSummaryError, match="digest"):
        InputSummary.from_dict(data)
    with pytest.raises(InputSummaryError, match="malformed"):
        InputSummary.from_dict({"format": 1, "features": [{}]})
    with pytest.raises(InputSummaryError, match="whole rows"):
        summarise(np.zeros((10, 4))).bin(np.zeros(6))
