"""A canary's evidence, gathered from every process that serves it.

Every worker and replica answers its share of a canary's traffic, so each keeps its own
cumulative counts for both sides (:class:`Side`) and writes them, every poll, to its own
file beside the model: ``<repo>/<model>/.loop/canary-v<N>/<instance>.json`` (atomic and
fsynced, like every repository write). The leader sums every file to decide; every process
sums them to show the window in its metadata.

Why files on the repository rather than the leader asking followers: the shared volume is
the one thing every process is sure to reach (no pod-to-pod addressing, no discovery), the
files outlive a leader that dies mid-window (its successor decides on the same evidence),
and cumulative snapshots make every write idempotent: a rewrite never double counts, a lost
write is superseded by the next. A restarted process is a new instance with a new file, so
the sum stays monotonic. A file that does not parse is skipped and counted, never fatal.

Latency is a log-bucketed histogram (2 % wide buckets, each keeping its count and its
largest value), so sides merge exactly and p99 is off by at most one bucket's width.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from model_repo.durable import atomic_write_json

log = logging.getLogger("tunegate.canary")
T = TypeVar("T")

LOOP_DIR = ".loop"  # hidden: Triton, the version scan and the watcher ignore it
_LOG_WIDTH = math.log(1.02)


def _bucket(ms: float) -> int:
    return math.floor(math.log(max(ms, 1e-3) * 1000.0) / _LOG_WIDTH)


@dataclass
class Side:
    """What one side of the comparison did during the window."""

    requests: int = 0
    errors: int = 0
    labelled: int = 0
    correct: int = 0
    latency: dict[int, list[float]] = field(default_factory=dict)  # bucket -> [count, largest ms]

    def add_latency(self, ms: float) -> None:
        entry = self.latency.get(b := _bucket(ms))
        if entry is None:
            self.latency[b] = [1, ms]
        else:
            entry[0] += 1
            entry[1] = max(entry[1], ms)

    @property
    def latency_count(self) -> int:
        return int(sum(count for count, _ in self.latency.values()))

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def p99_ms(self) -> float | None:
        n = self.latency_count
        if not n:
            return None
        rank, seen = math.ceil(0.99 * n), 0
        for b in sorted(self.latency):
            seen += self.latency[b][0]
            if seen >= rank:
                return self.latency[b][1]
        return None  # unreachable: the counts add up to n

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None

    def merge(self, other: Side) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.labelled += other.labelled
        self.correct += other.correct
        for b, (count, largest) in other.latency.items():
            entry = self.latency.setdefault(b, [0, largest])
            entry[0] += count
            entry[1] = max(entry[1], largest)

    def to_dict(self) -> dict[str, Any]:
        """What metadata and the decision report show."""
        return {"requests": self.requests, "errors": self.errors, "error_rate": round(self.error_rate, 6),
                "p99_ms": None if self.p99_ms is None else round(self.p99_ms, 3),
                "labelled": self.labelled,
                "accuracy": None if self.accuracy is None else round(self.accuracy, 6)}

    def to_evidence(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors, "labelled": self.labelled,
                "correct": self.correct, "latency": [[b, c, m] for b, (c, m) in self.latency.items()]}

    @classmethod
    def from_evidence(cls, data: dict[str, Any]) -> Side:
        side = cls(int(data["requests"]), int(data["errors"]), int(data["labelled"]), int(data["correct"]))
        for b, count, largest in data["latency"]:
            side.latency[int(b)] = [int(count), float(largest)]
        return side

    def copy(self) -> Side:
        side = Side()
        side.merge(self)
        return side


def evidence_dir(repo_root: Path, model: str, version: int) -> Path:
    return Path(repo_root) / model / LOOP_DIR / f"canary-v{version}"


def write_evidence(directory: Path, instance: str, canary: Side, stable: Side) -> None:
    """This process's cumulative counts (blocking). A follower's last write may land after
    the leader removed a decided canary's directory; the leader's tidy-up removes it again."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write_json(directory / f"{instance}.json", {"instance": instance, "canary": canary.to_evidence(),
                                                          "stable": stable.to_evidence()})
    except FileNotFoundError:
        pass  # removed in between: decided


def other_processes(directory: Path, exclude: str, parse: Callable[[Path, dict], T],
                    what: str) -> Iterator[T]:
    """``parse`` of every process's file in ``directory`` but ``exclude``'s (blocking). A
    file gone meanwhile is passed over; one that does not read or parse (``parse`` raising
    ValueError, KeyError, TypeError or AttributeError) is logged as ``what`` and skipped."""
    try:
        files = sorted(directory.glob("*.json"))
    except OSError:
        files = []
    for path in files:
        if path.stem == exclude:
            continue
        try:
            parsed = parse(path, json.loads(path.read_bytes()))
        except FileNotFoundError:
            continue  # removed while we read (decided, or long stale)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("%s %s skipped: %s: %s", what, path, type(exc).__name__, exc)
            continue
        if parsed is not None:
            yield parsed


def read_evidence(directory: Path, exclude: str = "") -> tuple[Side, Side, int]:
    """Both sides summed over every process's file but ``exclude``'s, and how many files
    counted (blocking)."""
    canary, stable, counted = Side(), Side(), 0
    parse = lambda _, data: (Side.from_evidence(data["canary"]), Side.from_evidence(data["stable"]))  # noqa: E731
    for sides in other_processes(directory, exclude, parse, "canary evidence"):
        canary.merge(sides[0])
        stable.merge(sides[1])
        counted += 1
    return canary, stable, counted


def remove_evidence(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
