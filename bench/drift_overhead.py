"""Per-request cost of the loop's observe hook with drift monitoring on and off.

Times ``Loop._observe``-equivalent work in process: the drift monitor's ``observe`` over many
answered requests of a 64-feature model (the digits example's shape), against a model with
no monitor (drift off: one dict miss). Sampling only: binning runs off the event loop, once
per poll, and is timed separately per sampled row. Prints ns per call and the difference.

    .venv/bin/python bench/drift_overhead.py [--calls 200000] [--batch 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    from gateway.loop.drift import DriftMonitor, ModelDrift
    from model_repo.drift import summarise

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1, help="rows per request")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    reference = summarise(rng.random((1000, 64)))
    monitor = DriftMonitor(None, None, instance="bench", poll_seconds=1.0)  # type: ignore[arg-type]
    state = monitor.models["on"] = ModelDrift(1, reference, "x", 64, 60.0)
    answer = ({"x": rng.random((args.batch, 64)).astype(np.float32)}, {})

    def run(model: str) -> float:
        started = time.perf_counter_ns()
        for i in range(args.calls):
            if i % 1000 == 0:  # the poll empties what was sampled; the stride stays as traffic set it
                state.pending.clear()
                state.pending_rows = 0
            monitor.observe(model, answer)
        return (time.perf_counter_ns() - started) / args.calls

    for stride in (1, 16):
        state.stride = stride
        run("on")  # warm
        off, on = min(run("off") for _ in range(3)), min(run("on") for _ in range(3))
        print(f"stride {stride:>2}: drift off {off:7.1f} ns/call  on {on:7.1f} ns/call  added {on - off:7.1f} ns")
    rows = rng.random((256 * args.batch, 64)).astype(np.float32)
    started = time.perf_counter_ns()
    for _ in range(20):
        reference.bin(rows)
    per_row = (time.perf_counter_ns() - started) / (20 * len(rows))
    print(f"binning off the event loop: {per_row:.0f} ns per sampled row ({len(rows)} rows per poll)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
