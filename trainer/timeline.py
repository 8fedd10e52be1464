"""Reading Horovod's timeline (``HOROVOD_TIMELINE=<file>``): which collectives ran, and where
their time went.

The file is a Chrome trace: one row (``pid``) per tensor name; on it each collective is a
``NEGOTIATE_<OP>`` span (waiting until every rank has submitted the tensor: the ranks'
skew) followed by an ``<OP>`` span (the exchange itself, with nested activities such as
``GLOO_ALLREDUCE`` or ``MEMCPY_IN_FUSION_BUFFER``). Horovod leaves the JSON list open
while the job runs; :func:`read_events` closes it.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path


def read_events(path: Path) -> list[dict]:
    text = Path(path).read_text().strip().rstrip(",")
    if not text:
        return []
    return json.loads(text if text.endswith("]") else text + "]")


def spans(events: list[dict]) -> list[tuple[str, int, float]]:
    """(name, nesting depth, duration in ms) of every begin/end pair."""
    open_spans: dict[int, list[tuple[str, float]]] = defaultdict(list)
    out = []
    for event in events:
        if event.get("ph") == "B":
            open_spans[event["pid"]].append((event["name"], event["ts"]))
        elif event.get("ph") == "E" and open_spans[event["pid"]]:
            name, began = open_spans[event["pid"]].pop()
            out.append((name, len(open_spans[event["pid"]]), (event["ts"] - began) / 1e3))
    return out


def collectives(path: Path) -> dict[str, dict[str, float]]:
    """Per top-level span name (``ALLREDUCE``, ``NEGOTIATE_ALLREDUCE``, ``BROADCAST``…) and
    per nested activity (``GLOO_ALLREDUCE``…): how many, their total ms and their median ms
    (the typical step's: the first negotiations also wait out the ranks' start-up skew).
    Empty when the job issued no collective."""
    durations: dict[str, list[float]] = defaultdict(list)
    for name, depth, ms in spans(read_events(path)):
        durations[name if depth == 0 else f"{name} (inside)"].append(ms)
    return {name: {"count": len(ms), "ms": sum(ms), "median_ms": statistics.median(ms)}
            for name, ms in durations.items()}
