"""Input summaries and drift statistics: what a version was trained on, against live traffic.

A version's manifest may hold ``input_summary`` (:class:`InputSummary`, as JSON): for each of
at most ``MAX_FEATURES`` features of one input tensor, fixed bins whose edges are quantiles of
the reference data (the training or conversion inputs), plus an underflow and an overflow
bin for values outside the reference's range, and the reference's count in every bin. The
gateway bins live inputs with the same edges (:meth:`InputSummary.bin`); counts from any
number of processes and intervals add up, so a window's summary is the sum of its parts.

Drift per feature is the population stability index (PSI) between the reference's and the
live bin proportions, and a two-sample Kolmogorov–Smirnov statistic read off the binned CDFs
(the largest CDF gap at a bin edge: a lower bound of the exact KS, exact at the edges). The
overall score is the largest PSI: a shift in one feature is what matters, and the mean
would dilute it by the features that did not move. Rule of thumb for PSI: < 0.1 stable,
0.1–0.2 moderate, > 0.2 a significant shift.

Wide inputs (images, sequences) are first projected to ``MAX_FEATURES`` dimensions by a
count sketch (feature hashing): every input coordinate is added, with a random sign, to one
of the dimensions. Why a random projection rather than picking some coordinates or PCA:
picking coordinates misses a shift in the ones not picked (a rotated digit moves ink into
pixels an upright one never uses), and PCA keeps the reference's directions of largest
variance, while a new distribution often differs in directions the reference hardly used; a
random projection is blind to neither (sums over coordinates preserve inner products in
expectation). Why a count sketch: it needs O(width) memory and time per row, not a dense
width x 32 matrix (19 MB for a 224x224x3 image). It is drawn from ``numpy.random.RandomState``,
whose stream numpy keeps stable across versions, with the seed and a digest of the sketch
recorded in the summary, so the gateway rebuilds the same projection or refuses to compare.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from .errors import RepositoryError

MAX_FEATURES = 32  # features summarised; wider inputs are projected down to this many
MAX_BINS = 16  # in-range bins per feature (plus underflow and overflow)
ROWS_PER_BIN = 25  # fewer reference rows get fewer bins: PSI's noise grows with bins / rows
MIN_ROWS = 200  # live rows a score needs: below it, noise alone can pass a 0.2 threshold
FORMAT = 1
_EPS = 0.5  # added to every bin's count before PSI's logarithm (an empty bin is not infinitely surprising)


class InputSummaryError(RepositoryError):
    """Data that cannot be summarised, or a summary that cannot be read."""

    status = 400


@dataclass(frozen=True)
class Projection:
    """A count sketch of ``width`` coordinates onto ``dims`` (each dimension gets a balanced
    share of coordinates, none empty)."""

    width: int
    dims: int
    seed: int

    @cached_property
    def _plan(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rs = np.random.RandomState(self.seed)
        bucket = rs.permutation(np.arange(self.width) % self.dims)
        sign = rs.randint(0, 2, size=self.width).astype(np.float64) * 2.0 - 1.0
        order = np.argsort(bucket, kind="stable")
        starts = np.searchsorted(bucket[order], np.arange(self.dims))
        return order, sign[order], starts

    @property
    def digest(self) -> str:
        order, sign, _ = self._plan
        return hashlib.sha256(order.astype("<i8").tobytes() + sign.astype("<f8").tobytes()).hexdigest()[:16]

    def apply(self, rows: np.ndarray) -> np.ndarray:
        order, sign, starts = self._plan
        return np.add.reduceat(rows[:, order] * sign, starts, axis=1)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "count_sketch", "generator": "numpy.random.RandomState", "width": self.width,
                "dims": self.dims, "seed": self.seed, "digest": self.digest}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Projection:
        if data.get("kind") != "count_sketch":
            raise InputSummaryError(f"input_summary: unknown projection {data.get('kind')!r}")
        projection = cls(int(data["width"]), int(data["dims"]), int(data["seed"]))
        if data.get("digest") != projection.digest:
            raise InputSummaryError("input_summary: this numpy draws a different projection from the recorded "
                                    "seed (digest mismatch); the summary cannot be compared")
        return projection


@dataclass
class InputSummary:
    """Per-feature bins of one input tensor's rows (JSON: :meth:`to_dict`)."""

    width: int  # values per row of the input (the product of its shape past the batch dimension)
    edges: list[np.ndarray]  # per feature: [reference min, interior quantiles..., reference max]
    counts: np.ndarray  # (features, MAX_BINS + 2) int64; a feature's bins past its own are always 0
    input: str | None = None  # the input tensor; None: the model's only input
    projection: Projection | None = None

    @property
    def rows(self) -> int:
        return int(self.counts[0].sum()) if len(self.counts) else 0

    @property
    def features(self) -> int:
        return len(self.edges)

    def empty(self) -> np.ndarray:
        """Zero counts shaped like this summary's: what live bins start from."""
        return np.zeros_like(self.counts)

    def values(self, data: np.ndarray) -> np.ndarray:
        """``data`` (rows of the input, any leading shape) as (rows, features) float64."""
        data = np.asarray(data)
        if data.size % self.width:
            raise InputSummaryError(f"{data.size} values are not whole rows of {self.width}")
        rows = data.reshape(-1, self.width).astype(np.float64, copy=False)
        return rows if self.projection is None else self.projection.apply(rows)

    def bin(self, data: np.ndarray) -> np.ndarray:
        """Counts of ``data``'s rows in this summary's bins, shaped like ``counts``."""
        return _bin(self.values(data), self.edges)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "input": self.input, "width": self.width, "rows": self.rows,
                "projection": None if self.projection is None else self.projection.to_dict(),
                "features": [{"edges": e.tolist(), "counts": self.counts[i, :_bins(e)].tolist()}
                             for i, e in enumerate(self.edges)]}

    @classmethod
    def from_dict(cls, data: Any) -> InputSummary:
        try:
            if data.get("format") != FORMAT:
                raise InputSummaryError(f"input_summary: format {data.get('format')!r}, expected {FORMAT}")
            projection = data.get("projection")
            edges = [np.asarray(f["edges"], dtype=np.float64) for f in data["features"]]
            counts = np.zeros((len(edges), MAX_BINS + 2), dtype=np.int64)
            for i, feature in enumerate(data["features"]):
                row = np.asarray(feature["counts"], dtype=np.int64)
                if len(row) != _bins(edges[i]) or not np.all(np.diff(edges[i]) > 0):
                    raise InputSummaryError(f"input_summary: feature {i} has inconsistent edges and counts")
                counts[i, :len(row)] = row
            return cls(int(data["width"]), edges, counts, data.get("input"),
                       None if projection is None else Projection.from_dict(projection))
        except (AttributeError, KeyError, TypeError, ValueError, IndexError) as exc:
            raise InputSummaryError(f"input_summary: malformed ({type(exc).__name__}: {exc})") from None


def summarise(data: np.ndarray, *, input: str | None = None, max_features: int = MAX_FEATURES,
              seed: int = 0) -> InputSummary:
    """The summary of ``data`` (rows along the first axis) as a reference."""
    data = np.asarray(data)
    if data.ndim == 0 or len(data) == 0 or data.size == 0:
        raise InputSummaryError("input_summary: the reference data has no rows")
    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise InputSummaryError(f"input_summary: cannot summarise {data.dtype} data (numbers only)")
    width = int(data.size // len(data))
    projection = Projection(width, max_features, seed) if width > max_features else None
    summary = InputSummary(width, [], np.zeros((0, MAX_BINS + 2), np.int64), input, projection)
    values = summary.values(data)
    n_bins = int(min(MAX_BINS, max(2, len(values) // ROWS_PER_BIN)))
    quantiles = np.linspace(0.0, 1.0, n_bins + 1)
    for column in values.T:
        finite = column[np.isfinite(column)]
        summary.edges.append(np.unique(np.quantile(finite, quantiles)) if len(finite) else np.zeros(1))
    summary.counts = _bin(values, summary.edges)
    return summary


def _bins(edges: np.ndarray) -> int:
    """Bins of a feature: underflow, max(1, len(edges) - 1) in range, overflow."""
    return max(1, len(edges) - 1) + 2


def _bin(values: np.ndarray, edges: list[np.ndarray]) -> np.ndarray:
    counts = np.zeros((len(edges), MAX_BINS + 2), dtype=np.int64)
    for i, e in enumerate(edges):
        column = values[:, i]
        # In range: [e0, e1), [e1, e2), ..., [e_{m-2}, e_{m-1}] (the maximum closes the last bin).
        index = np.searchsorted(e[1:-1], column, side="right") + 1
        index[column < e[0]] = 0
        index[~(column <= e[-1])] = _bins(e) - 1  # above the range, and NaN
        counts[i] = np.bincount(index, minlength=MAX_BINS + 2)
    return counts


@dataclass
class Drift:
    """The comparison of live counts with a reference."""

    rows: int  # live rows compared
    psi: np.ndarray  # per feature
    ks: np.ndarray  # per feature

    @property
    def score(self) -> float | None:
        """The largest PSI, or None while fewer than ``MIN_ROWS`` live rows are in."""
        return float(self.psi.max()) if self.rows >= MIN_ROWS and len(self.psi) else None

    def top(self, k: int) -> list[dict[str, Any]]:
        """The ``k`` features that moved most, largest PSI first."""
        order = np.argsort(-self.psi, kind="stable")[:k]
        return [{"feature": int(i), "psi": round(float(self.psi[i]), 6), "ks": round(float(self.ks[i]), 6)}
                for i in order]


def compare(reference: InputSummary, live: np.ndarray) -> Drift:
    """PSI and binned KS of every feature, ``live`` counts against the reference's."""
    return Drift(int(live[0].sum()) if len(live) else 0, psi(reference.counts, live, reference.edges),
                 ks(reference.counts, live))


def psi(expected: np.ndarray, actual: np.ndarray, edges: list[np.ndarray] | None = None) -> np.ndarray:
    """Population stability index per row of two (features, bins) count arrays: the sum over
    bins of (a - e) * ln(a / e) on proportions, each count smoothed by ``_EPS`` over the
    feature's own bins (``edges`` says how many; default: every column)."""
    expected, actual = np.asarray(expected, np.float64), np.asarray(actual, np.float64)
    used = np.ones_like(expected, dtype=bool)
    if edges is not None:
        used = np.arange(expected.shape[1]) < np.array([_bins(e) for e in edges])[:, None]
    out = np.zeros(len(expected))
    for i in range(len(expected)):
        e, a = expected[i, used[i]] + _EPS, actual[i, used[i]] + _EPS
        e, a = e / e.sum(), a / a.sum()
        out[i] = float(np.sum((a - e) * np.log(a / e)))
    return out


def ks(expected: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """The largest gap between the two binned CDFs, per feature (0 where either side is empty)."""
    expected, actual = np.asarray(expected, np.float64), np.asarray(actual, np.float64)
    n_e, n_a = expected.sum(axis=1, keepdims=True), actual.sum(axis=1, keepdims=True)
    if not len(expected):
        return np.zeros(0)
    gap = np.abs(np.cumsum(expected, axis=1) / np.maximum(n_e, 1) - np.cumsum(actual, axis=1) / np.maximum(n_a, 1))
    return np.where((n_e[:, 0] > 0) & (n_a[:, 0] > 0), gap.max(axis=1), 0.0)
