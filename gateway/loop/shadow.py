"""Shadow evaluation: a candidate is checked against the traffic it will see, and against
the model's golden set, before any user request reaches it.

When a fine-tune job publishes a version it is loaded but not routed (the canary's
``shadow`` phase). The loop's leader then runs, off the request path, on the stable version
and the candidate alike:

- **replay** of recent captured requests (this process's captures): how often the two
  disagree on the predicted class, and each one's latency per batch;
- **held-back labels**: feedback rows numbered after the candidate's data snapshot
  (``model_repo.ledger``: the rows its job read are in its manifest, whoever launched it, so
  it is never graded on what it trained on), scored on both: accuracy, and the candidate's
  calibration (expected calibration error over 10 confidence bins);
- **the golden set**: a per-model regression set (``golden.npz`` in the model's directory,
  or ``golden_set`` in the loop settings; features under the input's name or ``x``, class
  labels under ``label`` or ``y``), which guards what the model knew against forgetting.

Each source ends ``passed``, ``failed`` or ``insufficient`` (too little evidence: fewer
than ``shadow_min_replay`` replayed requests, ``min_labelled`` held-back labels, or no
golden set), with its counts. A candidate fails if it loses more than ``golden_max_drop``
of accuracy on the golden set, more than ``shadow_max_accuracy_drop`` on held-back labels,
disagrees with the stable version on more than ``shadow_max_disagreement`` of replayed
requests (when set), or is slower on the replay beyond the canary's p99 guard. The
phase's ``status``: ``failed`` if any source failed, else ``passed`` if any source had
enough evidence, else ``insufficient`` — the canary then goes on to the request window but
may not be promoted on it alone: its labelled test, or a person, decides
(``gateway.loop.canary_verdict``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from model_repo.feedback import feedback_dir, read_feedback

PASSED, FAILED, INSUFFICIENT = "passed", "failed", "insufficient"

from ..core.registry import ServedVersion
from .settings import LoopSettings

_BINS = 10


@dataclass
class Labelled:
    feeds: dict[str, np.ndarray]
    labels: np.ndarray  # class ids

    def __len__(self) -> int:
        return int(self.labels.shape[0])


async def predictions(served: ServedVersion, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, list[float]]:
    """(scores of the first output, milliseconds per batch) over ``feeds`` in batches."""
    rows = next(iter(feeds.values())).shape[0]
    batch = max(1, served.config.max_batch_size or 1)
    output = served.signature.outputs[0].name
    scores, times = [], []
    for start in range(0, rows, batch):
        chunk = served.runtime.prepare({k: v[start:start + batch] for k, v in feeds.items()})
        began = time.perf_counter()
        out = await served.runtime.predict(chunk, [output])
        times.append((time.perf_counter() - began) * 1000)
        scores.append(np.asarray(out[output]))
    return np.concatenate(scores), times


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(scores, axis=1) == labels))


def calibration_error(scores: np.ndarray, labels: np.ndarray) -> float:
    """Expected calibration error: |confidence - accuracy| over confidence bins, weighted."""
    confidence = scores.max(axis=1)
    correct = np.argmax(scores, axis=1) == labels
    bins = np.minimum((confidence * _BINS).astype(int), _BINS - 1)
    total = 0.0
    for b in np.unique(bins):
        mask = bins == b
        total += mask.mean() * abs(confidence[mask].mean() - correct[mask].mean())
    return float(total)


def _p99(times: Sequence[float]) -> float:
    return float(np.percentile(times, 99)) if times else 0.0


async def evaluate(stable: ServedVersion, candidate: ServedVersion, settings: LoopSettings, *,
                   replay: dict[str, np.ndarray] | None, held_back: Labelled | None,
                   golden: Labelled | None) -> dict[str, Any]:
    """The shadow report: every source's numbers and status, the phase's ``status`` and
    ``reason`` (see the module doc)."""
    report: dict[str, Any] = {"stable_version": stable.version, "version": candidate.version}
    try:
        failures = await _checks(report, stable, candidate, settings, replay, held_back, golden)
    except Exception as exc:  # the candidate (or a set it cannot take) fails: that is a verdict
        failures = [f"evaluation failed: {type(exc).__name__}: {exc}"]
    sources = [report[k]["status"] for k in ("replay", "held_back", "golden") if isinstance(report.get(k), dict)]
    report["status"] = FAILED if failures else PASSED if PASSED in sources else INSUFFICIENT
    report["passed"] = report["status"] == PASSED
    report["reason"] = "; ".join(failures) if failures else _summary(report)
    report["decided_at"] = time.time()
    return report


def status(report: dict[str, Any]) -> str:
    """A recorded report's status (reports from before ``status`` had only ``passed``)."""
    found = report.get("status")
    return found if found in (PASSED, FAILED, INSUFFICIENT) else PASSED if report.get("passed") else FAILED


async def _checks(report: dict[str, Any], stable: ServedVersion, candidate: ServedVersion, settings: LoopSettings,
                  replay: dict[str, np.ndarray] | None, held_back: Labelled | None,
                  golden: Labelled | None) -> list[str]:
    failures: list[str] = []
    replayed = 0 if not replay else int(next(iter(replay.values())).shape[0])
    if not replayed:
        report["replay"] = {"status": INSUFFICIENT, "requests": 0, "needed": settings.shadow_min_replay}
    else:  # even a few requests can expose a fault; as evidence for a pass they must be enough
        (s_scores, s_times), (c_scores, c_times) = (await predictions(stable, replay),
                                                    await predictions(candidate, replay))
        disagreement = float(np.mean(np.argmax(s_scores, 1) != np.argmax(c_scores, 1)))
        before = len(failures)
        if settings.shadow_max_disagreement is not None and disagreement > settings.shadow_max_disagreement:
            failures.append(f"disagrees with version {stable.version} on {disagreement:.1%} of "
                            f"{s_scores.shape[0]} replayed requests (allowed {settings.shadow_max_disagreement:.1%})")
        limit = max(_p99(s_times) * settings.max_p99_ratio, _p99(s_times) + settings.p99_slack_ms)
        if len(c_times) >= 10 and _p99(c_times) > limit:
            failures.append(f"p99 {_p99(c_times):.1f} ms per replayed batch vs {_p99(s_times):.1f} ms")
        enough = replayed >= settings.shadow_min_replay
        report["replay"] = {"status": FAILED if len(failures) > before else PASSED if enough else INSUFFICIENT,
                            "requests": replayed, "needed": settings.shadow_min_replay, "disagreement": round(disagreement, 6),
                            "stable_p99_ms": round(_p99(s_times), 3), "candidate_p99_ms": round(_p99(c_times), 3)}
    for name, data, allowed, needed in (("held_back", held_back, settings.shadow_max_accuracy_drop, settings.min_labelled),
                                        ("golden", golden, settings.golden_max_drop, 1)):
        if data is None or len(data) < needed:
            report[name] = {"status": INSUFFICIENT, "examples": 0 if data is None else len(data), "needed": needed}
            continue
        s_scores, _ = await predictions(stable, data.feeds)
        c_scores, _ = await predictions(candidate, data.feeds)
        s_acc, c_acc = accuracy(s_scores, data.labels), accuracy(c_scores, data.labels)
        worse = s_acc - c_acc > allowed + 1e-9  # a drop of exactly the allowance is allowed (floats)
        report[name] = {"status": FAILED if worse else PASSED, "examples": len(data),
                        "stable_accuracy": round(s_acc, 6), "accuracy": round(c_acc, 6),
                        "calibration_error": round(calibration_error(c_scores, data.labels), 6)}
        if worse:
            what = "the golden set" if name == "golden" else "held-back labelled feedback"
            failures.append(f"accuracy on {what} {c_acc:.2%} vs {s_acc:.2%} on version {stable.version} "
                            f"({len(data)} examples; allowed -{allowed:.2%})")
    return failures


def _summary(report: dict[str, Any]) -> str:
    parts = []
    for name in ("replay", "held_back", "golden"):
        value = report[name]
        if value["status"] == INSUFFICIENT:
            have = value.get("requests", value.get("examples"))
            parts.append(f"{name}: {have} of {value['needed']} needed (insufficient)")
        elif "accuracy" in value:
            parts.append(f"{name} accuracy {value['accuracy']:.2%} vs {value['stable_accuracy']:.2%}")
        else:
            parts.append(f"replay disagreement {value['disagreement']:.1%} over {value['requests']}")
    return "; ".join(parts)


def load_golden(path: Path, input_names: list[str]) -> Labelled | None:
    """The golden set at ``path`` (blocking); None if there is none."""
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        keys = set(data.files)
        if set(input_names) <= keys:
            feeds = {name: data[name] for name in input_names}
        elif len(input_names) == 1 and "x" in keys:
            feeds = {input_names[0]: data["x"]}
        else:
            raise ValueError(f"golden set {path}: expected arrays {input_names} (or 'x' for one input), "
                             f"found {sorted(keys)}")
        label = "label" if "label" in keys else "y" if "y" in keys else None
        if label is None:
            raise ValueError(f"golden set {path}: expected class labels under 'label' or 'y', found {sorted(keys)}")
        return Labelled(feeds, data[label].astype(np.int64).reshape(-1))


def load_held_back(repo_root: Path, model: str, after: int, input_names: list[str]) -> Labelled | None:
    """Feedback rows numbered after ``after`` (the candidate's data snapshot), when they are
    class labels (blocking; opens no shard that ends before them)."""
    data = read_feedback(feedback_dir(repo_root, model), after=after)
    if not len(data):
        return None
    if data.labels.ndim != 1 or not np.issubdtype(data.labels.dtype, np.integer):
        return None  # targets, not classes: accuracy does not apply
    return Labelled({name: data.inputs[name] for name in input_names}, data.labels.astype(np.int64))
